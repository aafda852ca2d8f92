"""The environment reaper and expiry warnings (a DM with an *Extend* button)."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from bot.core.channels import ChannelRegistry
from bot.core.clock import Clock, utcnow
from bot.core.message import Button, Message, Tone
from bot.core.outbox import DeliveryFailed
from bot.store import Community, EnvironmentRecord, Store, Submission, User
from provisioning.manager import Provisioner

log = logging.getLogger(__name__)


def extend_button(env_id: str) -> Button:
    return Button("Extend", f"extend:{env_id}", primary=True)


def expiry_warning(env: EnvironmentRecord, minutes: int) -> Message:
    return Message(
        title=f"Your environment {env.id} expires in {minutes} min",
        body=f"Everything in it ({env.challenge}) is destroyed when it expires. "
        "Extend it if you are still working.",
        buttons=[extend_button(env.id)],
        tone=Tone.WARNING,
    )


class EnvWatch:
    def __init__(
        self,
        store: Store,
        provisioner: Provisioner,
        channels: ChannelRegistry,
        *,
        warn_before: timedelta,
        clock: Clock = utcnow,
    ) -> None:
        self.store = store
        self.provisioner = provisioner
        self.channels = channels
        self.warn_before = warn_before
        self.clock = clock

    async def reap(self) -> list[str]:
        """Destroy expired environments; mark them (and any found gone) destroyed."""
        gone = set(await self.provisioner.reap())
        live = {e.id for e in await self.provisioner.backend.list()}
        async with self.store.session() as s:
            records = await s.scalars(
                select(EnvironmentRecord).where(EnvironmentRecord.destroyed_at.is_(None))
            )
            for rec in records:
                if rec.id in gone or rec.id not in live:
                    rec.destroyed_at = self.clock()
        return sorted(gone)

    async def warn(self) -> list[str]:
        """DM each learner whose environment expires within ``warn_before`` (once per expiry)."""
        now = self.clock()
        async with self.store.session() as s:
            rows = (
                await s.execute(
                    select(EnvironmentRecord, User)
                    .join(User, User.id == EnvironmentRecord.user_id)
                    .where(
                        EnvironmentRecord.destroyed_at.is_(None),
                        EnvironmentRecord.warned_at.is_(None),
                        EnvironmentRecord.expires_at > now,
                        EnvironmentRecord.expires_at <= now + self.warn_before,
                    )
                )
            ).all()
        warned = []
        for env, user in rows:
            channels = self.channels.get(user.platform)
            if channels is None:
                continue
            minutes = max(1, round((env.expires_at - now).total_seconds() / 60))
            try:
                await channels.dm(
                    await self._community_of(user), user.platform_id, expiry_warning(env, minutes)
                )
            except DeliveryFailed as exc:
                if exc.transient:  # rate limited, or no answer: the next run warns
                    log.info("cannot warn %s yet: %s", user.platform_id, exc.reason)
                    continue
                log.info("cannot warn %s: %s", user.platform_id, exc.reason)
            async with self.store.session() as s:
                (await s.get_one(EnvironmentRecord, env.id)).warned_at = now
            warned.append(env.id)
        return warned

    async def _community_of(self, user: User) -> Community | None:
        """Where the learner was last seen: their latest submission's community."""
        async with self.store.session() as s:
            community_id = await s.scalar(
                select(Submission.community_id)
                .where(Submission.user_id == user.id, Submission.community_id.is_not(None))
                .order_by(Submission.id.desc())
                .limit(1)
            )
            return await s.get(Community, community_id) if community_id else None
