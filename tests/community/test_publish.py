"""A finished grade stays finished: whatever the platform refuses while the results are
published, the submission stays ``done``, its score counts, and the learner gets the outcome by
the next route that works; what is refused for a while is published later, across restarts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from bot.core.commands import dispatch
from bot.core.outbox import Actor, DeliveryFailed, InteractionExpired
from bot.core.publish import NOTED, SKIPPED
from bot.scheduler import Operations
from bot.store import Publication, Submission
from tests.community.support import (
    Clock,
    RecordingChannels,
    ScriptedGrader,
    coach_over,
    community,
)
from tests.support.outbox import RecordingOutbox

ADA = Actor("test", "1", "ada")
URL = "http://127.0.0.1:9/ada"
DENIED = DeliveryFailed("the bot lacks Send Messages in #c")
ARCHIVED = DeliveryFailed("the thread under the day's post is archived")
SLOW_DOWN = DeliveryFailed("rate limited (429)", transient=True, retry_after=2.0)


async def publication(coach, sub_id: int) -> Publication:  # type: ignore[no-untyped-def]
    async with coach.store.session() as s:
        return await s.scalar(select(Publication).where(Publication.submission_id == sub_id))


async def test_a_refused_channel_keeps_the_grade_and_tells_the_learner_why(
    home: Path, clock: Clock
) -> None:
    grader = ScriptedGrader(scores={URL: 85})
    async with coach_over(home, clock=clock, grader=grader) as coach:
        where = await community(coach)
        box = RecordingOutbox(refuse={"post": DENIED, "thread": ARCHIVED, "edit": SLOW_DOWN})
        sub = await coach.submit(ADA, "rate-limiter", URL, box, thread="#c/7", community=where)

        assert (sub.status, sub.score) == ("done", 85)  # refused edits and posts fail nothing
        assert not box.posts
        ((_, dm),) = box.dms
        assert dm.title == "Your full grade report"
        both = f"{ARCHIVED.reason}; {DENIED.reason}"  # the thread's refusal, then the channel's
        assert [f.value for f in dm.fields] == [f"{both} — it is only here"]
        pub = await publication(coach, sub.id)
        assert (pub.status, pub.card_ref, pub.channel_error) == ("published", SKIPPED, both)
        board = await coach.leaderboard("rate-limiter", community=where)
        assert "ada" in board.body and "85" in board.body
        await dispatch(coach, ADA, "results", box)
        assert f"not posted in the channel: {both}" in box.replies[-1][1].body


async def test_an_archived_thread_falls_back_to_the_channel(home: Path, clock: Clock) -> None:
    async with coach_over(home, clock=clock) as coach:
        where = await community(coach)
        box = RecordingOutbox(refuse={"thread": ARCHIVED})
        sub = await coach.submit(ADA, "rate-limiter", URL, box, thread="#c/7", community=where)
        # the card in the channel; its discussion cannot go in a thread either: the channel
        assert [(thread, m.title.split()[0]) for _, thread, m in box.posts] == [
            (None, "ada"),
            (None, "Trade-offs:"),
        ]
        assert (await publication(coach, sub.id)).status == "published"
        assert box.dms and not box.dms[0][1].fields  # in the channel: nothing to explain


async def test_closed_dms_answer_in_a_private_reply_or_leave_a_note(
    home: Path, clock: Clock
) -> None:
    async with coach_over(home, clock=clock) as coach:
        where = await community(coach)
        box = RecordingOutbox(dms_closed=True, refuse={"post": DENIED, "thread": DENIED})
        await coach.submit(ADA, "rate-limiter", URL, box, community=where)
        reply = box.replies[-1][1]
        assert reply.title == "Your full grade report" and DENIED.reason in reply.text()

        expired = InteractionExpired("the interaction is older than 15 minutes")
        box = RecordingOutbox(dms_closed=True, refuse={"post": DENIED, "reply": expired})
        sub = await coach.submit(ADA, "rate-limiter", URL, box, community=where)
        pub = await publication(coach, sub.id)
        assert (pub.status, pub.report_ref) == ("published", NOTED)
        assert pub.note is not None and "not delivered" in pub.note
        results = RecordingOutbox()
        await dispatch(coach, ADA, "results", results)
        line = results.replies[-1][1].body.splitlines()[0]
        assert line.startswith(f"#{sub.id} rate-limiter: 50/100")
        assert "not posted in the channel" in line and "report not delivered" in line


async def test_a_rate_limited_channel_is_published_later_even_after_a_restart(
    home: Path, clock: Clock
) -> None:
    grader = ScriptedGrader(scores={URL: 72})
    async with coach_over(home, clock=clock, grader=grader) as coach:
        where = await community(coach)
        box = RecordingOutbox(refuse={"post": SLOW_DOWN})
        sub = await coach.submit(ADA, "rate-limiter", URL, box, community=where)
        assert sub.status == "done"
        pub = await publication(coach, sub.id)
        assert (pub.status, pub.card_ref, pub.last_error) == ("pending", None, SLOW_DOWN.reason)
        assert pub.next_attempt_at == clock.now + timedelta(seconds=30)
        ((_, dm),) = box.dms  # the learner has the outcome now, and knows the card will follow
        assert "will be posted when the platform accepts it" in dm.fields[0].value

    channels = RecordingChannels(refuse={"post": SLOW_DOWN})
    async with coach_over(home, clock=clock, channels=channels) as coach:  # a restart
        assert await coach.publisher.retry_due() == 0  # not due yet
        clock.advance(seconds=31)
        assert await coach.publisher.retry_due() == 1  # still refused: later again
        pub = await publication(coach, sub.id)
        assert (pub.status, pub.attempts) == ("pending", 2)
        assert pub.next_attempt_at == clock.now + timedelta(seconds=60)

        del channels.refuse["post"]
        clock.advance(seconds=61)
        assert await coach.publisher.retry_due() == 1
        pub = await publication(coach, sub.id)
        assert (pub.status, pub.next_attempt_at) == ("published", None)
        assert [p.message.title.split()[0] for p in channels.posts] == ["ada", "Trade-offs:"]
        assert channels.posts[1].thread == channels.posts[0].ref  # discussion under the card
        assert not channels.dms  # the report was delivered the first time: not twice
        assert await coach.publisher.retry_due() == 0
        async with coach.store.session() as s:
            assert (await s.get_one(Submission, sub.id)).status == "done"


async def test_a_resumed_grade_publishes_through_the_channels_and_survives_a_crash(
    home: Path, clock: Clock
) -> None:
    """No interaction: the channels; a client that raises something unexpected is a refusal
    for a while, never a failed grade."""
    channels = RecordingChannels(crash_next=True)
    async with coach_over(home, clock=clock, channels=channels) as coach:
        where = await community(coach)
        user = await coach.user(ADA)
        sub = await coach.queue.add(
            Submission(
                user_id=user.id,
                challenge="rate-limiter",
                url=URL,
                seed=1,
                community_id=where.id,
                created_at=clock.now,
            )
        )
        await coach.queue.idle()
        async with coach.store.session() as s:
            assert (await s.get_one(Submission, sub.id)).status == "done"
        pub = await publication(coach, sub.id)
        assert pub.status == "pending" and "did not answer" in (pub.last_error or "")
        assert [m.title for _, m in channels.dms] == ["Your full grade report"]
        clock.advance(minutes=1)
        assert await coach.publisher.retry_due() == 1
        assert (await publication(coach, sub.id)).status == "published"
        assert [p.channel_id for p in channels.posts] == ["#c", "#c"]


async def test_operations_publish_what_is_due_at_start_and_then_on_schedule(
    home: Path, clock: Clock
) -> None:
    channels = RecordingChannels(refuse={"post": SLOW_DOWN})
    async with coach_over(home, clock=clock, channels=channels) as coach:
        where = await community(coach)
        user = await coach.user(ADA)
        sub = await coach.queue.add(
            Submission(
                user_id=user.id,
                challenge="rate-limiter",
                url=URL,
                seed=1,
                community_id=where.id,
                created_at=clock.now,
            )
        )
        await coach.queue.idle()
        assert (await publication(coach, sub.id)).status == "pending"

    del channels.refuse["post"]
    clock.advance(minutes=1)
    async with coach_over(home, clock=clock, channels=channels) as coach:  # the next start
        ops = Operations(coach, clock=clock)
        await ops.start()
        try:
            assert "publications" in ops.next_runs()
            assert (await publication(coach, sub.id)).status == "published"
            assert [p.message.title.split()[0] for p in channels.posts] == ["ada", "Trade-offs:"]
        finally:
            await ops.stop()
