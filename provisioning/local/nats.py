"""NATS with JetStream: a learner account with storage caps, the system account for the grader.

Exposed (:mod:`provisioning.tls`), the server stays on loopback in plain text and the TLS relay
(``--protocol nats``) serves ``tls://`` on the public side: nats-server has no throttling of
failed logins (each bad password gets ``-ERR 'Authorization Violation'`` and the connection
closes, https://docs.nats.io/reference/reference-protocols/nats-protocol#-err), so the relay
refuses an address after repeated violations, as it does for Valkey. The grader connects to the
loopback port directly.

Only the learner's account is reachable through the public port: exposed, the server also
listens for WebSocket connections on loopback (``WS``, plain text), the relay reaches it there,
and the system account's user allows ``STANDARD`` connections only while the learner's allows
``STANDARD`` and ``WEBSOCKET``
(https://docs.nats.io/running-a-nats-service/configuration/securing_nats/authorization#allowed-connection-types).
The server itself refuses the system user on the relay's connections, at the first ``CONNECT``
and at any later one (a second ``CONNECT`` on an open connection authenticates again).
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import nats
from nats.errors import Error as NatsError

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
from provisioning.tls import admin_tls

LEARNER = "app"
ADMIN = "admin"
AUTH_FAILED = r"-ERR 'Authorization Violation'"  # a bad user or password; the relay throttles
WS = "ws"  # exposed: the loopback WebSocket port the relay connects to


def _url(user: str, pw: str, host: str, port: int, scheme: str = "nats") -> str:
    return f"{scheme}://{quote(user)}:{quote(pw, safe='')}@{host}:{port}"


async def _quiet(_: Exception) -> None:
    """nats-py logs every connection error by default; the caller reports instead."""


class NatsDriver(RelayedDriver):
    kind = Resource.QUEUE

    def ports_for(self, slot: Slot) -> tuple[str, ...]:
        return self.port_names if slot.exposure is None else (*self.port_names, WS, PUBLIC)

    def configure(self, slot: Slot, ports: dict[str, int]) -> ResourceInfo:
        port = ports["port"]
        admin_pw, learner_pw = password(), password()
        websocket, learner_types = "", ""
        if slot.exposure is not None:
            websocket = (
                f'websocket {{ listen: "{self.host}:{ports[WS]}", no_tls: true, '
                "compression: false }\n"
            )
            learner_types = ', allowed_connection_types: ["STANDARD", "WEBSOCKET"]'
        admin_types = ', allowed_connection_types: ["STANDARD"]'
        data = slot.home / "data"
        data.mkdir(mode=0o700, exist_ok=True)
        conf = slot.home / "nats.conf"
        conf.write_text(
            f"server_name: {json.dumps(self._server_name(slot))}\n"
            f'listen: "{slot.bind}:{port}"\n'
            "http_port: 0\n"
            f"{websocket}"
            "jetstream {\n"
            f"  store_dir: {json.dumps(str(data))}\n"
            "  max_memory_store: 128MB\n"
            "  max_file_store: 512MB\n"
            "}\n"
            "accounts {\n"
            "  APP {\n"
            "    jetstream { max_mem: 64MB, max_file: 256MB, max_streams: 32, max_consumers: 128 }\n"
            f"    users [ {{ user: {LEARNER}, password: {json.dumps(learner_pw)}{learner_types} }} ]\n"
            "  }\n"
            f"  SYS {{ users [ {{ user: {ADMIN}, password: {json.dumps(admin_pw)}{admin_types} }} ] }}\n"
            "}\n"
            "system_account: SYS\n"
        )
        conf.chmod(0o600)
        slot.run_as.own(conf, data)
        learner_url = _url(LEARNER, learner_pw, self.host, port)
        learner = {"NATS_URL": learner_url}
        if slot.exposure is not None:
            slot.exposure.install(slot.home)
            public = _url(LEARNER, learner_pw, slot.public, ports[PUBLIC], "tls")
            learner = {**slot.exposure.bundle_vars(), "NATS_URL": public}
        return ResourceInfo(
            kind=self.kind,
            host=slot.public if slot.exposure is not None else self.host,
            port=port,
            learner=learner,
            admin={"url": _url(ADMIN, admin_pw, self.host, port), "learner_url": learner_url},
            secrets=[admin_pw, learner_pw],
            extra={"ports": ports},
        )

    @staticmethod
    def _server_name(slot: Slot) -> str:
        return f"cruscible-{slot.env_id}"

    def server_argv(self, slot: Slot, info: ResourceInfo) -> list[str]:
        return [str(binaries.nats_server()), "-c", str(slot.home / "nats.conf")]

    def relay(self, slot: Slot, info: ResourceInfo) -> Relay | None:
        if slot.exposure is None:
            return None
        ports = info.extra["ports"]
        return Relay(ports[PUBLIC], ports[WS], "nats", fail_pattern=AUTH_FAILED)

    async def probe(self, slot: Slot, info: ResourceInfo, budget: float) -> str:
        await port_open(self.host, info.port, budget)  # nats-py waits seconds on refused ports
        if slot.exposure is not None:
            await port_open(slot.local, info.extra["ports"][PUBLIC], budget)  # the TLS relay
        tls = admin_tls(info.admin)
        try:
            nc = await asyncio.wait_for(
                nats.connect(
                    info.admin["url"],
                    **({"tls": tls} if tls is not None else {}),
                    connect_timeout=budget,
                    allow_reconnect=False,
                    max_reconnect_attempts=0,
                    error_cb=_quiet,
                ),
                budget,
            )
        except (NatsError, OSError, TimeoutError) as exc:
            raise NotReady(f"cannot connect: {type(exc).__name__}: {exc}") from None
        try:
            reply = await nc.request("$SYS.REQ.SERVER.PING.VARZ", b"", timeout=budget)
            varz = json.loads(reply.data)
        except (NatsError, OSError, TimeoutError, ValueError) as exc:
            raise NotReady(f"VARZ request failed: {type(exc).__name__}: {exc}") from None
        finally:
            await nc.close()
        data = varz.get("data", {})
        if data.get("server_name") != self._server_name(slot):
            raise NotReady(f"a different NATS server answers on port {info.port}")
        if not data.get("jetstream", {}).get("config"):
            raise NotReady("JetStream is not enabled yet")
        return f"NATS {data.get('version', '')} with JetStream"
