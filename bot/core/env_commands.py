"""The coach's environments: *Start*, status, extend, destroy, and the jobs' own side."""

from __future__ import annotations

from sqlalchemy import select

from bot.core import views
from bot.core.envwatch import EnvWatch
from bot.core.errors import CoachError
from bot.core.message import Message
from bot.core.outbox import Actor, DirectMessageClosed, Outbox
from bot.logs import SECRETS
from bot.store import EnvironmentRecord, User
from challenges.catalog import Challenge
from provisioning import EnvironmentSpec
from provisioning.backend import ProvisioningError
from provisioning.environment import Environment


class EnvironmentCommands:
    """Part of :class:`bot.core.coach.Coach`, whose attributes and catalog and learner
    methods it uses."""

    async def provision(self, actor: Actor, challenge_id: str, out: Outbox) -> Environment:
        challenge = self.challenge(challenge_id)
        ref = await out.reply(views.provisioning(challenge.id))
        try:
            env = await self._environment(actor, challenge)
        except CoachError as exc:
            await out.edit(ref, views.error(str(exc)))
            raise
        try:
            await out.dm(actor, views.bundle_dm(env))
            await out.edit(ref, views.bundle_sent(env))
        except DirectMessageClosed:
            await out.edit(ref, views.bundle_dm(env))  # private reply, never the channel
        return env

    async def _environment(self, actor: Actor, challenge: Challenge) -> Environment:
        """A new environment of ``challenge`` for ``actor``: made here, or by a worker when
        grades run on the job engine (``bot.core.envjobs``; the bundle is read here from the
        backend every role reaches)."""
        jobs = getattr(self.queue, "environments", None)
        if jobs is None:
            spec = challenge.environment_spec(self.owner(actor), self.settings.env_ttl)
            return await self.create_environment(actor, spec)
        user = await self.user(actor)
        env_id = await jobs.provision(user.id, challenge.id)
        try:
            env = await self.provisioner.get(env_id)
        except ProvisioningError as exc:
            raise CoachError(
                f"environment {env_id} was made but cannot be read here: {exc}"
            ) from None
        SECRETS.add(*env.secrets())
        return env

    async def _make_environment_for(self, user_id: int, challenge_id: str) -> str:
        """A worker's side of a ``provision`` job: make and record the environment."""
        async with self.store.session() as s:
            user = await s.get_one(User, user_id)
        actor = Actor(user.platform, user.platform_id, user.display_name)
        spec = self.challenge(challenge_id).environment_spec(
            self.owner(actor), self.settings.env_ttl
        )
        return (await self.create_environment(actor, spec)).id

    async def _forget_environment(self, env_id: str) -> None:
        """Record ``env_id`` destroyed if its backend no longer has it."""
        try:
            await self.provisioner.get(env_id)
            return
        except ProvisioningError:
            pass
        async with self.store.session() as s:
            rec = await s.get(EnvironmentRecord, env_id)
            if rec is not None and rec.destroyed_at is None:
                rec.destroyed_at = self.clock()

    async def reap_environments(self) -> list[str]:
        """Destroy expired environments and mark them (and any found gone) destroyed."""
        return await EnvWatch(
            self.store, self.provisioner, self.channels, warn_before=self.settings.env_warn_before,
            clock=self.clock,
        ).reap()  # fmt: skip

    async def create_environment(self, actor: Actor, spec: EnvironmentSpec) -> Environment:
        """Provision ``spec`` and record it, so a restart knows it is not an orphan."""
        user = await self.user(actor)
        try:
            env = await self.provisioner.up(spec)
        except ProvisioningError as exc:
            raise CoachError(str(exc)) from None
        SECRETS.add(*env.secrets())
        async with self.store.session() as s:
            s.add(
                EnvironmentRecord(
                    id=env.id,
                    user_id=user.id,
                    challenge=spec.label,
                    backend=env.backend,
                    created_at=env.created_at,
                    expires_at=env.expires_at,
                )
            )
        return env

    async def environments(self, actor: Actor) -> list[Environment]:
        return await self.provisioner.list(owner=self.owner(actor))

    async def env_status(self, actor: Actor) -> Message:
        return views.environments(await self.environments(actor))

    async def _own_env(self, actor: Actor, env_id: str) -> Environment:
        env = next((e for e in await self.environments(actor) if e.id == env_id), None)
        if env is None:
            raise CoachError(f"you have no environment {env_id!r}")
        return env

    async def env_extend(self, actor: Actor, env_id: str) -> Message:
        await self._own_env(actor, env_id)
        try:
            env = await self.provisioner.extend(env_id, self.settings.env_extend_by)
        except ProvisioningError as exc:
            raise CoachError(str(exc)) from None
        async with self.store.session() as s:
            rec = await s.get(EnvironmentRecord, env_id)
            if rec is not None:
                rec.expires_at, rec.warned_at = env.expires_at, None  # warn again before then
        return views.environments([env])

    async def env_destroy(self, actor: Actor, env_id: str) -> Message:
        await self._own_env(actor, env_id)
        jobs = getattr(self.queue, "environments", None)
        if jobs is None:
            await self.destroy_environment(env_id)
        elif not await jobs.teardown(env_id):
            return Message(
                title=f"Environment {env_id}: destroying",
                body="No worker has destroyed it yet: it goes when one takes the request, "
                "and at its expiry at the latest.",
            )
        return Message(title=f"Environment {env_id} destroyed", body="Everything in it is gone.")

    async def destroy_environment(self, env_id: str) -> None:
        try:
            await self.provisioner.down(env_id)
        except ProvisioningError as exc:
            raise CoachError(str(exc)) from None
        async with self.store.session() as s:
            rec = await s.get(EnvironmentRecord, env_id)
            if rec is not None:
                rec.destroyed_at = self.clock()

    async def known_environment_ids(self) -> set[str]:
        async with self.store.session() as s:
            rows = await s.scalars(
                select(EnvironmentRecord.id).where(EnvironmentRecord.destroyed_at.is_(None))
            )
            return set(rows)
