"""The reaper and the expiry warning, on a real environment: a DM with an *Extend* button
before it expires, the button extends it, the reaper tears it down once expired."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bot.core.commands import press
from bot.core.envwatch import EnvWatch
from bot.core.outbox import Actor, DeliveryFailed
from bot.store import EnvironmentRecord
from provisioning import EnvironmentSpec, Resource
from tests.community.support import Clock, RecordingChannels, coach_over
from tests.support.outbox import RecordingOutbox

ADA = Actor("test", "1", "ada")


async def test_warned_once_extended_by_the_button_then_reaped(home: Path, clock: Clock) -> None:
    channels = RecordingChannels()
    async with coach_over(home, clock=clock, channels=channels) as coach:
        spec = EnvironmentSpec((Resource.REDIS,), owner=coach.owner(ADA), ttl=timedelta(hours=1))
        env = await coach.create_environment(ADA, spec)
        coach.provisioner.clock = clock  # the reaper's "now" too
        watch = EnvWatch(
            coach.store,
            coach.provisioner,
            coach.channels,
            warn_before=timedelta(minutes=15),
            clock=clock,
        )
        try:
            clock.now = env.expires_at - timedelta(minutes=20)
            assert await watch.warn() == []
            clock.now = env.expires_at - timedelta(minutes=10)
            assert await watch.warn() == [env.id]
            assert await watch.warn() == []  # once per expiry
            ((user_id, dm),) = channels.dms
            assert user_id == "1" and dm.title == f"Your environment {env.id} expires in 10 min"
            assert [b.action for b in dm.buttons] == [f"extend:{env.id}"]

            box = RecordingOutbox()
            await press(coach, ADA, dm.buttons[0].action, box)
            assert box.replies[-1][1].title == "Your environments"
            (extended,) = await coach.environments(ADA)
            assert extended.expires_at > env.expires_at
            clock.now = extended.expires_at - timedelta(minutes=5)
            assert await watch.warn() == [env.id]  # warned again before the new expiry

            assert await watch.reap() == []
            clock.now = extended.expires_at + timedelta(seconds=1)
            assert await watch.reap() == [env.id]
            assert await coach.environments(ADA) == []
            async with coach.store.session() as s:
                record = await s.get_one(EnvironmentRecord, env.id)
            assert record.destroyed_at == clock.now
        finally:
            if await coach.environments(ADA):
                await coach.destroy_environment(env.id)


async def test_a_warning_refused_for_a_while_is_sent_by_the_next_run(
    home: Path, clock: Clock
) -> None:
    """A rate-limited DM neither stops the job nor counts as warned; a closed DM does."""
    channels = RecordingChannels(refuse={"dm": DeliveryFailed("429", transient=True)})
    async with coach_over(home, clock=clock, channels=channels) as coach:
        user = await coach.user(ADA)
        async with coach.store.session() as s:
            s.add(
                EnvironmentRecord(
                    id="env-w",
                    user_id=user.id,
                    challenge="rate-limiter",
                    backend="local",
                    created_at=clock.now,
                    expires_at=clock.now + timedelta(minutes=10),
                )
            )
        watch = EnvWatch(
            coach.store,
            coach.provisioner,
            coach.channels,
            warn_before=timedelta(minutes=15),
            clock=clock,
        )
        assert await watch.warn() == []
        channels.refuse.clear()
        assert await watch.warn() == ["env-w"]
        assert [m.title for _, m in channels.dms] == ["Your environment env-w expires in 10 min"]
