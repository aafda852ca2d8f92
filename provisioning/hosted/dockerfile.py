"""What a learner's ``Dockerfile`` builds on: the images its ``FROM`` lines (and ``COPY --from``
of an image) name, so that each one can be checked on the engine *before* the build (a missing
one would make the engine pull it from a registry; nothing is pulled here).

The syntax followed is the Dockerfile reference (https://docs.docker.com/reference/dockerfile/):
comment lines, the ``escape`` parser directive, line continuations, ``ARG`` before the first
``FROM`` (its default is usable in ``FROM``), ``$NAME``/``${NAME}``/``${NAME:-default}``
substitution, stage names (``FROM image AS name``) and stage indexes in ``COPY --from``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCRATCH = "scratch"
KEYWORDS = frozenset(
    [
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "MAINTAINER",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    ]
)  # the Dockerfile reference's instructions
OUR_LABELS = re.compile(r"""(^|\s)["']?cruscible\.""", re.IGNORECASE)  # the host's own labels
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$")
_VARIABLE = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


class DockerfileError(ValueError):
    """The Dockerfile cannot be used here; ``str()`` is the reason (no field prefix)."""


@dataclass(frozen=True)
class Instruction:
    """One instruction: ``line`` (1-based, where it starts), ``keyword`` upper-case, ``args``
    the rest of the (joined) line."""

    line: int
    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """The instructions of ``text``, continuation lines joined and comments dropped."""
    escape = "\\"
    lines = text.splitlines()
    for raw in lines:  # parser directives: only at the very top, before any other line
        match = _DIRECTIVE.match(raw.strip())
        if not match:
            break
        if match.group(1).lower() == "escape" and match.group(2) in ("\\", "`"):
            escape = match.group(2)
    out: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:  # inside a continuation too, as Docker
            continue
        if not pending:
            start = number
        if stripped.endswith(escape):
            pending += stripped[: -len(escape)] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        if whole:
            out.append(_instruction(start, whole))
    if pending.strip():
        out.append(_instruction(start, pending.strip()))
    return out


def _instruction(line: int, whole: str) -> Instruction:
    """The keyword ends at any white space (a tab too), as Docker's parser reads it."""
    keyword, *rest = whole.split(None, 1)
    return Instruction(line, keyword.upper(), rest[0].strip() if rest else "")


def _substitute(value: str, args: dict[str, str | None], where: str) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        known = args.get(name)
        if known:
            return known
        if match.group(2) is not None:
            return match.group(2)
        raise DockerfileError(
            f"{where}: ${name} has no value (give the ARG a default before the first FROM)"
        )

    return _VARIABLE.sub(one, value)


def _flags(words: list[str]) -> tuple[dict[str, str], list[str]]:
    flags: dict[str, str] = {}
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name.lower()] = value
    return flags, words


def _remote(source: str) -> bool:
    """An ``ADD`` source the engine would fetch itself: a URL or a git remote."""
    return "://" in source or source.startswith("git@")


def base_images(text: str) -> list[str]:
    """The images (as written, variables substituted) the Dockerfile ``text`` starts from or
    copies from, in order, without ``scratch`` and its own stages. Raises
    :class:`DockerfileError` when there is no ``FROM``, a ``FROM`` cannot be read or names
    ``--platform`` (another platform would be pulled), an instruction is unknown (Docker
    might read it as another), an ``ADD`` fetches a URL or git remote (the engine would, from
    its own network), or a ``LABEL`` names ``cruscible.*`` (the host finds its containers by
    those labels, and a container inherits its image's)."""
    args: dict[str, str | None] = {}
    stages: set[str] = set()
    images: list[str] = []
    seen_from = False
    for ins in instructions(text):
        where = f"line {ins.line} ({ins.keyword})"
        if ins.keyword not in KEYWORDS:  # read otherwise by Docker, or not at all: refused
            raise DockerfileError(f"line {ins.line}: unknown instruction {ins.keyword!r}")
        if ins.keyword == "ADD" and any(_remote(w) for w in _flags(ins.args.split())[1][:-1]):
            raise DockerfileError(
                f"{where}: a URL or git source is fetched by the engine from its network: "
                "put the file in your repository and COPY it"
            )
        if ins.keyword == "LABEL" and OUR_LABELS.search(ins.args):
            raise DockerfileError(f"{where}: labels named cruscible.* are the host's own")
        if ins.keyword == "ARG" and not seen_from:
            for word in ins.args.split():
                name, sep, default = word.partition("=")
                args[name] = default.strip("\"'") if sep else None
        elif ins.keyword == "FROM":
            seen_from = True
            flags, words = _flags(ins.args.split())
            if "platform" in flags:
                raise DockerfileError(f"{where}: --platform is not supported here")
            if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
                raise DockerfileError(f"{where}: expected FROM IMAGE [AS NAME]")
            ref = _substitute(words[0], args, where)
            if ref.lower() != SCRATCH and ref.lower() not in stages and ref not in images:
                images.append(ref)
            if len(words) == 3:
                stages.add(words[2].lower())
        elif ins.keyword == "COPY":
            flags, _ = _flags(ins.args.split())
            source = flags.get("from")
            if source and not source.isdigit() and source.lower() not in stages | set(images):
                images.append(source)
    if not seen_from:
        raise DockerfileError("no FROM line")
    return images
