"""Leaderboards: per challenge, per contest and all-time, ranked by best score, ties broken by
the earlier submission. Learners who opted out (``users.public`` false) are left out.

A ranked score marked ⚙ ran hosted: we built and ran the learner's code on the same caps for
everyone, so it compares fairly; an unmarked one is a URL the learner deployed themselves."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select

from bot.core.message import Message
from bot.store import Store, Submission, User

SHOWN = 10
HOSTED_MARK = " ⚙"


@dataclass(frozen=True)
class Entry:
    user_id: int
    name: str
    score: int
    at: datetime  # when the ranked score was submitted (the tie-break: earlier wins)
    tries: int
    hosted: bool = False  # the ranked score ran hosted (every score of an all-time total did)


@dataclass(frozen=True)
class Graded:
    """One graded submission, as the boards see it."""

    user_id: int
    name: str
    challenge: str
    score: int
    at: datetime
    hosted: bool = False


def best_per_learner(rows: Iterable[Graded]) -> list[Entry]:
    """Each learner's best score (earliest submission of it), best first, ties by time."""
    best: dict[int, Graded] = {}
    tries: dict[int, int] = {}
    for r in rows:
        tries[r.user_id] = tries.get(r.user_id, 0) + 1
        held = best.get(r.user_id)
        if held is None or (r.score, -r.at.timestamp()) > (held.score, -held.at.timestamp()):
            best[r.user_id] = r
    entries = [
        Entry(b.user_id, b.name, b.score, b.at, tries[b.user_id], b.hosted) for b in best.values()
    ]
    return sorted(entries, key=lambda e: (-e.score, e.at, e.user_id))


def all_time(rows: Iterable[Graded]) -> list[Entry]:
    """The sum of each learner's best score per challenge; ties by when that total was reached."""
    per: dict[tuple[int, str], list[Graded]] = {}
    for r in rows:
        per.setdefault((r.user_id, r.challenge), []).append(r)
    totals: dict[int, Entry] = {}
    for (user_id, _), graded in per.items():
        (top,) = best_per_learner(graded)
        held = totals.get(user_id)
        totals[user_id] = Entry(
            user_id,
            top.name,
            top.score + (held.score if held else 0),
            max(top.at, held.at) if held else top.at,
            top.tries + (held.tries if held else 0),
            top.hosted and (held.hosted if held else True),
        )
    return sorted(totals.values(), key=lambda e: (-e.score, e.at, e.user_id))


async def graded(
    store: Store,
    *,
    challenge: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    community_id: int | None = None,
) -> list[Graded]:
    """Public learners' graded submissions, by submission time in ``[since, until)``."""
    q = (
        select(
            Submission.user_id,
            User.display_name,
            Submission.challenge,
            Submission.score,
            Submission.created_at,
            Submission.hosted,
        )
        .join(User, User.id == Submission.user_id)
        .where(Submission.status == "done", Submission.score.is_not(None), User.public.is_(True))
    )
    if challenge is not None:
        q = q.where(Submission.challenge == challenge)
    if since is not None:
        q = q.where(Submission.created_at >= since)
    if until is not None:
        q = q.where(Submission.created_at < until)
    if community_id is not None:
        q = q.where(Submission.community_id == community_id)
    async with store.session() as s:
        rows = (await s.execute(q)).all()
    return [Graded(u, n, c, score, at, bool(h)) for u, n, c, score, at, h in rows]


def render(
    title: str,
    entries: list[Entry],
    *,
    empty: str = "No graded submission yet.",
    points: str = "/100",
) -> Message:
    if not entries:
        return Message(title=title, body=empty)
    shown = entries[:SHOWN]
    lines = [
        f"{i}. {e.name} — {e.score}{points}{HOSTED_MARK if e.hosted else ''} "
        f"({e.tries} {'try' if e.tries == 1 else 'tries'})"
        for i, e in enumerate(shown, 1)
    ]
    more = len(entries) - SHOWN
    notes = [f"and {more} more"] if more > 0 else []
    if any(e.hosted for e in shown):
        notes.append(f"{HOSTED_MARK.strip()} ran hosted, on equal resources")
    footer = " · ".join(notes)
    return Message(title=title, body="\n".join(lines), footer=footer)


class BoardCache:
    """Rendered boards for ``ttl_s`` seconds, dropped at once when a grade or a learner's
    privacy changes them: a busy channel asking for the board costs one query per change."""

    def __init__(self, ttl_s: float = 10.0) -> None:
        self.ttl_s = ttl_s
        self._boards: dict[tuple[str | None, int | None], tuple[float, Message]] = {}

    def get(self, key: tuple[str | None, int | None]) -> Message | None:
        held = self._boards.get(key)
        if held is None or time.monotonic() - held[0] > self.ttl_s:
            return None
        return replace(held[1])

    def put(self, key: tuple[str | None, int | None], board: Message) -> Message:
        self._boards[key] = (time.monotonic(), board)
        return replace(board)

    def clear(self) -> None:
        self._boards.clear()
