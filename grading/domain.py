"""Seeded text from the whole domain a contract states, not only short ASCII.

A contract that says "a key of 1..128 characters" promises every such string, and a grader
that only ever sends ``"user-42"`` cannot tell a service that keeps that promise from one that
cuts keys at 64 characters, counts UTF-8 bytes as characters, or replaces what is not ASCII.
:func:`text` draws strings from every class of character below, each class equally likely,
from the grade's seeded ``random.Random`` (the same seed, the same text):

- ASCII letters and digits;
- ASCII punctuation and the space — quotes, backslash, slash, ``%``, ``:``: what JSON
  escaping, URL building and ``prefix:key`` schemes get wrong;
- whitespace and control characters (tab, newline, DEL, NBSP, U+2028, a BOM, zero width);
- letters of two UTF-8 bytes (Latin-1 supplement, Latin extended, Greek, Cyrillic, Arabic)
  and combining marks;
- characters of three (Devanagari, the euro sign, CJK, Hangul);
- characters of four UTF-8 bytes, outside the BMP (emoji, mathematical letters, CJK
  extension B): two UTF-16 code units each.

A *character* is a Unicode code point (Python's ``len``). Where a contract's limit would count
differently in UTF-16 code units (JavaScript's ``length``), :func:`text` keeps within the limit
in both counts, so no verdict hangs on which one a service uses; in UTF-8 bytes a string may be
up to four times longer — a limit counted in bytes is not a limit in characters. Never drawn:
U+0000 (PostgreSQL text cannot hold it) and lone surrogates (not encodable in UTF-8).
"""

from __future__ import annotations

import itertools
import random
import string

# Each class of character, as the code points it is drawn from.
CLASSES: dict[str, tuple[str, ...]] = {
    "ascii": tuple(string.ascii_letters + string.digits),
    "punctuation": tuple(string.punctuation + " "),
    "control": tuple("\t\n\r\x0b\x0c\x1b\x1f\x7f\u0085\u00a0\u200b\u2028\u2029\ufeff"),
    "utf8-2": tuple(  # Latin-1 and Latin extended, Greek, Cyrillic, Arabic, combining marks
        chr(c)
        for lo, hi in (
            (0xC0, 0x250),
            (0x300, 0x370),
            (0x391, 0x3CA),
            (0x410, 0x450),
            (0x627, 0x64B),
        )
        for c in range(lo, hi)
        if c not in (0xD7, 0xF7)
    ),
    "utf8-3": tuple(  # Devanagari, the euro sign, CJK, Hangul
        chr(c)
        for lo, hi in ((0x905, 0x93A), (0x20AC, 0x20AD), (0x4E00, 0x4F00), (0xAC00, 0xAD00))
        for c in range(lo, hi)
    ),
    "astral": tuple(
        chr(c)
        for lo, hi in ((0x1F300, 0x1F650), (0x1D400, 0x1D4FF), (0x20000, 0x20100))
        for c in range(lo, hi)
    ),
}
NON_ASCII = ("utf8-2", "utf8-3", "astral")  # the classes beyond ASCII
# every class cycled to the largest one's size: a uniform draw from the pool picks each class
# equally often
_SIZE = max(len(chars) for chars in CLASSES.values())
_POOL = tuple(
    itertools.chain.from_iterable(
        itertools.islice(itertools.cycle(chars), _SIZE) for chars in CLASSES.values()
    )
)


_KIND = {c: kind for kind, chars in CLASSES.items() for c in chars}


def kind_of(c: str) -> str | None:
    """The class (a key of :data:`CLASSES`) character ``c`` belongs to; None for none."""
    return _KIND.get(c)


def utf16_length(s: str) -> int:
    """``s``'s length in UTF-16 code units (a character outside the BMP counts two)."""
    return len(s) + sum(ord(c) > 0xFFFF for c in s)


def text(
    rng: random.Random, length: int, *, limit: int | None = None, classes: tuple[str, ...] = ()
) -> str:
    """``length`` characters from ``classes`` (default: every class, equally likely), drawn
    from ``rng``. With the contract's ``limit`` (in characters), characters outside the BMP
    are swapped for BMP ones, from the end, until the UTF-16 length is within it too (see the
    module)."""
    pool = _POOL if not classes else tuple(c for k in classes for c in CLASSES[k])
    chars = rng.choices(pool, k=length)
    extra = 0 if limit is None else utf16_length("".join(chars)) - limit
    for i in range(length - 1, -1, -1):
        if extra <= 0:
            break
        if ord(chars[i]) > 0xFFFF:
            chars[i] = rng.choice(CLASSES["utf8-3"])
            extra -= 1
    return "".join(chars)


def other_char(rng: random.Random, c: str) -> str:
    """A character of ``c``'s class (the same UTF-8 and UTF-16 length) that is not ``c``."""
    chars = CLASSES[_KIND[c]]
    other = rng.choice(chars)
    return other if other != c else chars[(chars.index(c) + 1) % len(chars)]


def tagged(rng: random.Random, tag: str, length: int, *, limit: int | None = None) -> str:
    """A string of ``length`` characters (at least ``len(tag)``) holding ``tag`` — what makes
    it unique — at a drawn position, the rest :func:`text` (``limit`` as there)."""
    room = None if limit is None else limit - len(tag)
    fill = text(rng, max(0, length - len(tag)), limit=room)
    at = rng.randint(0, len(fill))
    return fill[:at] + tag + fill[at:]


def edge_texts(
    rng: random.Random, tag: str, limit: int, noun: str = "key"
) -> list[tuple[str, str, bool]]:
    """Texts at the edges of a domain of 1..``limit`` characters, as ``(what it is — a ``noun``
    — , the text, fresh)``; fresh ones are unique to ``tag`` (which must fit in half the limit), and two of
    them differ only where a careless service would merge them:

    - one character (not fresh: any run may send it);
    - ``limit`` characters (BMP only, so as many UTF-16 units), then the same but for its last
      character — a service that cuts text short merges the two;
    - up to ``limit // 2`` characters with some beyond ASCII, then the same with one of those
      replaced by another of its class (as many bytes) — a service that replaces or drops what
      is not ASCII merges the two, one that cuts at half the limit does not.
    """
    long = tagged(rng, tag + "L", limit, limit=limit)
    short = tagged(rng, tag + "S", rng.randint(len(tag) + 1, limit // 2), limit=limit)
    spots = [i for i, c in enumerate(short) if _KIND.get(c) in NON_ASCII]
    if not spots:
        short, spots = short + text(rng, 1, classes=("utf8-2",)), [len(short)]
    at = rng.choice(spots)
    was, now = short[at], other_char(rng, short[at])
    return [
        (f"a 1-character {noun}", text(rng, 1), False),
        (f"a {noun} of {limit} characters ({len(long.encode())} bytes)", long, True),
        (f"that {noun} but for its last character", long[:-1] + other_char(rng, long[-1]), True),
        (f"a {noun} with characters beyond ASCII", short, True),
        (f"that {noun} with {now!r} for {was!r}", short[:at] + now + short[at + 1 :], True),
    ]
