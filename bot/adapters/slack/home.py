"""App Home: a learner's live environments, recent results, streak and today's challenge."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select

from bot.adapters.slack.blocks import SLASH, VIEW_MAX_BLOCKS, header, to_blocks
from bot.core import views
from bot.core.coach import Coach
from bot.core.message import Message, Tone
from bot.core.outbox import Actor
from bot.store import Publication, Submission, User

HOME_MAX_BLOCKS = VIEW_MAX_BLOCKS  # a Home tab takes 100 blocks
RECENT = 5
STREAK_LOOKBACK_DAYS = 366


def streak(days: set[date], today: date) -> int:
    """Consecutive days with a graded submission, ending today (or yesterday: today is not over)."""
    day = today if today in days else today - timedelta(days=1)
    count = 0
    while day in days:
        count += 1
        day -= timedelta(days=1)
    return count


async def graded_submissions(coach: Coach, actor: Actor) -> list[Submission]:
    """The learner's graded submissions of the past year, newest first (none when unknown)."""
    since = datetime.now(UTC) - timedelta(days=STREAK_LOOKBACK_DAYS)
    async with coach.store.session() as s:
        return list(
            await s.scalars(
                select(Submission)
                .join(User, User.id == Submission.user_id)
                .where(
                    User.platform == actor.platform,
                    User.platform_id == actor.id,
                    Submission.status == "done",
                    Submission.created_at >= since,
                )
                .order_by(Submission.id.desc())
            )
        )


def undelivered_message(subs: list[Submission], notes: dict[int, Publication]) -> Message | None:
    """The grades whose outcome reached the learner nowhere else (no DM, no private reply):
    the coach keeps a note of them (``Publisher.notes``), shown here. None when there is none."""
    rows = [
        f"**{s.challenge}** #{s.id}: {s.score}/100 {'passed' if s.passed else 'not yet'}"
        f"{views.publication_note(notes[s.id])}"
        for s in subs
        if s.id in notes and notes[s.id].note
    ]
    if not rows:
        return None
    return Message(
        title="Results I could not deliver",
        body="\n".join(rows) + f"\n\n`{SLASH} results` lists them too.",
        tone=Tone.WARNING,
    )


def results_message(
    subs: list[Submission], today: date, notes: dict[int, Publication] | None = None
) -> Message:
    """The recent graded submissions, each with what its publication ran into, and the streak."""
    notes = notes or {}
    days = streak({s.created_at.astimezone(UTC).date() for s in subs}, today)
    rows = [
        f"**{s.challenge}** {s.score}/100 {'passed' if s.passed else 'not yet'}"
        f" · {s.created_at:%d %b}{views.publication_note(notes.get(s.id))}"
        for s in subs[:RECENT]
    ]
    unit = "day" if days == 1 else "days"
    return Message(
        title="Your recent results",
        body="\n".join(rows) or "No graded submission yet.",
        footer=f"Streak: {days} {unit} in a row with a graded submission",
    )


async def home_view(coach: Coach, actor: Actor) -> dict[str, Any]:
    """The ``home`` view published for ``actor``."""
    now = datetime.now(UTC)
    today = coach.today(now.date())
    subs = await graded_submissions(coach, actor)
    notes = await coach.publisher.notes([s.id for s in subs])
    blocks = [header("Cruscible")]
    undelivered = undelivered_message(subs, notes)
    if undelivered is not None:
        blocks += to_blocks(undelivered)
    blocks += to_blocks(views.environments(await coach.environments(actor)))
    blocks += to_blocks(results_message(subs, now.date(), notes))
    blocks += [{"type": "divider"}]
    blocks += to_blocks(Message(title=today.title, fields=today.fields, buttons=today.buttons))
    return {"type": "home", "blocks": blocks[:HOME_MAX_BLOCKS]}
