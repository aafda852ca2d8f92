"""NATS with JetStream: a learner account with storage caps, the system account for the grader."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import nats
from nats.errors import Error as NatsError

from provisioning.environment import ResourceInfo
from provisioning.local import binaries
from provisioning.local.driver import Driver, NotReady, Slot, password, port_open
from provisioning.spec import Resource
from provisioning.tls import admin_tls

LEARNER = "app"
ADMIN = "admin"


def _url(user: str, pw: str, host: str, port: int, scheme: str = "nats") -> str:
    return f"{scheme}://{quote(user)}:{quote(pw, safe='')}@{host}:{port}"


async def _quiet(_: Exception) -> None:
    """nats-py logs every connection error by default; the caller reports instead."""


class NatsDriver(Driver):
    kind = Resource.QUEUE

    def configure(self, slot: Slot, ports: dict[str, int]) -> ResourceInfo:
        port = ports["port"]
        admin_pw, learner_pw = password(), password()
        data = slot.home / "data"
        data.mkdir(mode=0o700, exist_ok=True)
        conf = slot.home / "nats.conf"
        exposure = slot.exposure
        tls = ""
        if exposure is not None:
            # every client connection must then be TLS (https://docs.nats.io/running-a-nats-service/configuration/securing_nats/tls)
            exposure.install(slot.home, slot.run_as.own)
            tls = (
                "tls {\n"
                f"  cert_file: {json.dumps(str(slot.home / 'tls.crt'))}\n"
                f"  key_file: {json.dumps(str(slot.home / 'tls.key'))}\n"
                "  verify: false\n"
                "  timeout: 2\n"
                "}\n"
            )
        bind = slot.bind if exposure is None else exposure.listen_host
        conf.write_text(
            f"server_name: {json.dumps(self._server_name(slot))}\n"
            f'listen: "{bind}:{port}"\n'
            f"{tls}"
            "http_port: 0\n"
            "jetstream {\n"
            f"  store_dir: {json.dumps(str(data))}\n"
            "  max_memory_store: 128MB\n"
            "  max_file_store: 512MB\n"
            "}\n"
            "accounts {\n"
            "  APP {\n"
            "    jetstream { max_mem: 64MB, max_file: 256MB, max_streams: 32, max_consumers: 128 }\n"
            f"    users [ {{ user: {LEARNER}, password: {json.dumps(learner_pw)} }} ]\n"
            "  }\n"
            f"  SYS {{ users [ {{ user: {ADMIN}, password: {json.dumps(admin_pw)} }} ] }}\n"
            "}\n"
            "system_account: SYS\n"
        )
        conf.chmod(0o600)
        slot.run_as.own(conf, data)
        learner_url = _url(LEARNER, learner_pw, self.host, port)
        learner = {"NATS_URL": learner_url}
        admin = {"url": _url(ADMIN, admin_pw, self.host, port), "learner_url": learner_url}
        if exposure is not None:
            learner = {
                "NATS_URL": _url(LEARNER, learner_pw, slot.public, port, "tls"),
                **exposure.bundle_vars(),
            }
            admin = {
                "url": _url(ADMIN, admin_pw, slot.local, port, "tls"),
                "learner_url": _url(LEARNER, learner_pw, slot.local, port, "tls"),
                "ca_file": str(exposure.ca_file or ""),
                "check_hostname": "true" if exposure.issued else "false",
            }
        return ResourceInfo(
            kind=self.kind,
            host=slot.public if exposure is not None else self.host,
            port=port,
            learner=learner,
            admin=admin,
            secrets=[admin_pw, learner_pw],
            extra={"ports": ports},
        )

    @staticmethod
    def _server_name(slot: Slot) -> str:
        return f"cruscible-{slot.env_id}"

    def argv(self, slot: Slot, info: ResourceInfo) -> list[str]:
        return [str(binaries.nats_server()), "-c", str(slot.home / "nats.conf")]

    async def probe(self, slot: Slot, info: ResourceInfo, budget: float) -> str:
        await port_open(slot.local, info.port, budget)  # nats-py waits seconds on refused ports
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
