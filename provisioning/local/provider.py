"""A simulated third-party API (``PROVIDER_URL``): a Python module the challenge names, run per environment."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.error
import urllib.request

from provisioning import provider_protocol as protocol
from provisioning.environment import ResourceInfo
from provisioning.local.driver import PUBLIC, Driver, NotReady, Slot, password
from provisioning.spec import Resource


class ProviderDriver(Driver):
    kind = Resource.PROVIDER
    service_user = False  # the project's Python may live where the service user cannot read

    def ports_for(self, slot: Slot) -> tuple[str, ...]:
        return self.port_names if slot.exposure is None else (*self.port_names, PUBLIC)

    def configure(self, slot: Slot, ports: dict[str, int]) -> ResourceInfo:
        module = slot.options.get("module", "")
        if not module:
            raise ValueError("the provider needs the module that serves it")
        port = ports["port"]
        token, admin_token = password(), password()
        url = f"http://{self.host}:{port}"
        learner = {protocol.ENV_URL: url, protocol.ENV_TOKEN: token}
        if slot.exposure is not None:
            slot.exposure.install(slot.home)
            learner = {
                **slot.exposure.bundle_vars(),
                protocol.ENV_URL: f"https://{slot.public}:{ports[PUBLIC]}",
                protocol.ENV_TOKEN: token,
            }
        return ResourceInfo(
            kind=self.kind,
            host=slot.public if slot.exposure is not None else self.host,
            port=port,
            learner=learner,
            admin={protocol.ADMIN_URL: url, protocol.ADMIN_TOKEN: admin_token},
            secrets=[token, admin_token],
            extra={"ports": ports, "module": module},
        )

    def argv(self, slot: Slot, info: ResourceInfo) -> list[str]:
        public = info.extra["ports"].get(PUBLIC)
        if slot.exposure is None or public is None:
            return [sys.executable, *protocol.argv(info.extra["module"], info.port)]
        return [
            sys.executable,
            *protocol.argv(
                info.extra["module"],
                info.port,
                public=(slot.exposure.listen_host, public),
                tls=(slot.home / "tls.crt", slot.home / "tls.key"),
            ),
        ]

    def environment(self, slot: Slot, info: ResourceInfo) -> dict[str, str]:
        """Tokens travel in the environment, never in argv (which ``ps`` shows); the module is
        found on the same import path as this process's."""
        return {
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            protocol.ENV_TOKEN: info.learner[protocol.ENV_TOKEN],
            protocol.ENV_ADMIN_TOKEN: info.admin[protocol.ADMIN_TOKEN],
        }

    async def probe(self, slot: Slot, info: ResourceInfo, budget: float) -> str:
        return await asyncio.to_thread(self._ping, info, budget)

    @staticmethod
    def _ping(info: ResourceInfo, budget: float) -> str:
        req = urllib.request.Request(
            info.admin[protocol.ADMIN_URL] + protocol.PING,
            headers={protocol.ADMIN_HEADER: info.admin[protocol.ADMIN_TOKEN]},
        )
        try:
            with urllib.request.urlopen(req, timeout=budget) as resp:  # noqa: S310 - loopback
                data = json.loads(resp.read())
        except (OSError, ValueError, urllib.error.URLError) as exc:
            raise NotReady(f"provider not answering: {exc}") from None
        try:
            calls = protocol.read_ping(data)
        except ValueError:
            raise NotReady("something else answers on the provider's port") from None
        return f"provider answering ({calls} calls recorded)"

    def wipe(self, slot: Slot) -> None:
        """The provider keeps its record in memory: a restart loses it anyway."""
