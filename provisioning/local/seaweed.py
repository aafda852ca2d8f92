"""S3 via SeaweedFS ``weed mini``: every port on loopback, a learner identity limited to its bucket.

Exposed, the TLS relay (``--protocol s3``) passes on only the requests signed with the learner's
access key: the admin identity cannot be used through the public port (see
:mod:`provisioning.local.tlsrelay`).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import aiohttp
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from provisioning.environment import ResourceInfo
from provisioning.local import binaries
from provisioning.local.driver import (
    PUBLIC,
    NotReady,
    Relay,
    RelayedDriver,
    Slot,
    access_key,
    password,
    port_open,
)
from provisioning.spec import Resource

REGION = "us-east-1"
ADMIN_ACTIONS = ["Admin", "Read", "Write", "List", "Tagging"]
LEARNER_ACTIONS = ("Read", "Write", "List", "Tagging")
PORTS_FILE = "ports.json"
AUTH_FAILED = r"<Code>(?:InvalidAccessKeyId|SignatureDoesNotMatch)</Code>"  # throttled by the relay
HEALTH_BUCKET = "cruscible-health"  # the grader's probe objects, out of the learner's bucket


class SeaweedDriver(RelayedDriver):
    kind = Resource.S3
    port_names = (
        "s3", "s3.grpc", "master", "master.grpc", "volume", "volume.grpc",
        "filer", "filer.grpc", "admin", "admin.grpc",
    )  # fmt: skip

    def configure(self, slot: Slot, ports: dict[str, int]) -> ResourceInfo:
        bucket = f"{slot.env_id}-data"
        admin_key, admin_secret = access_key(), password(30)
        learner_key, learner_secret = access_key(), password(30)
        identities = [
            {
                "name": "admin",
                "credentials": [{"accessKey": admin_key, "secretKey": admin_secret}],
                "actions": ADMIN_ACTIONS,
            },
            {
                "name": "learner",
                "credentials": [{"accessKey": learner_key, "secretKey": learner_secret}],
                "actions": [f"{a}:{bucket}" for a in LEARNER_ACTIONS],
            },
        ]
        (slot.home / PORTS_FILE).write_text(json.dumps(ports))
        conf = slot.home / "s3.json"
        conf.write_text(json.dumps({"identities": identities}, indent=2))
        conf.chmod(0o600)
        data = slot.home / "data"
        data.mkdir(mode=0o700, exist_ok=True)
        slot.run_as.own(conf, data)
        endpoint = f"http://{self.host}:{ports['s3']}"
        public_endpoint, extra_vars = endpoint, {}
        if slot.exposure is not None:  # weed stays on loopback; the relay serves HTTPS
            slot.exposure.install(slot.home)
            public_endpoint = f"https://{slot.public}:{ports[PUBLIC]}"
            extra_vars = slot.exposure.bundle_vars()
            if "CA_CERT_FILE" in extra_vars:
                extra_vars["AWS_CA_BUNDLE"] = extra_vars["CA_CERT_FILE"]
        return ResourceInfo(
            kind=self.kind,
            host=slot.public if slot.exposure is not None else self.host,
            port=ports["s3"],
            learner={
                **extra_vars,
                "S3_ENDPOINT_URL": public_endpoint,
                "S3_BUCKET": bucket,
                "AWS_ACCESS_KEY_ID": learner_key,
                "AWS_SECRET_ACCESS_KEY": learner_secret,
                "AWS_REGION": REGION,
            },
            admin={
                "endpoint_url": endpoint,
                "access_key": admin_key,
                "secret_key": admin_secret,
                "bucket": bucket,
            },
            secrets=[admin_secret, learner_secret],
            extra={"ports": ports},
        )

    def relay(self, slot: Slot, info: ResourceInfo) -> Relay | None:
        ports: dict[str, int] = info.extra["ports"]
        if slot.exposure is None or PUBLIC not in ports:
            return None
        learner_key = info.learner["AWS_ACCESS_KEY_ID"]  # an identifier, not the secret
        return Relay(ports[PUBLIC], ports["s3"], "s3", fail_pattern=AUTH_FAILED, user=learner_key)

    def server_argv(self, slot: Slot, info: ResourceInfo) -> list[str]:
        ports = {n: p for n, p in info.extra["ports"].items() if n != PUBLIC}
        home = slot.home
        return [
            str(binaries.weed()),
            "mini",
            f"-dir={home / 'data'}",
            f"-admin.dataDir={home / 'data' / 'admin'}",
            f"-ip={self.host}",
            f"-ip.bind={slot.bind}",
            *(
                f"-{name.replace('.grpc', '.port.grpc')}={port}"
                for name, port in ports.items()
                if name.endswith(".grpc")
            ),
            *(f"-{name}.port={port}" for name, port in ports.items() if not name.endswith(".grpc")),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            f"-filer.localSocket={home / 'filer.sock'}",
            f"-s3.localSocket={home / 's3.sock'}",
            f"-s3.config={home / 's3.json'}",
            f"-bucket={info.admin['bucket']},{HEALTH_BUCKET}",
        ]

    def environment(self, slot: Slot, info: ResourceInfo) -> dict[str, str]:
        env = {"TMPDIR": str(slot.home)}  # weed puts its gRPC sockets in the temp dir
        env.update(super().environment(slot, info))  # exposed, the relay imports this package
        return env

    def cleanup(self, slot: Slot) -> None:
        """weed hard-codes its gRPC unix sockets to /tmp/seaweedfs-<component>-grpc-<port>.sock."""
        try:
            ports = json.loads((slot.home / PORTS_FILE).read_text())
        except (OSError, ValueError):
            return
        for name, port in ports.items():
            if name.endswith(".grpc") and name != PUBLIC:
                component = name.removesuffix(".grpc")
                Path(f"/tmp/seaweedfs-{component}-grpc-{port}.sock").unlink(missing_ok=True)

    async def probe(self, slot: Slot, info: ResourceInfo, budget: float) -> str:
        """Write and read back an object with the admin key (only our server knows it), then
        check that the learner's key is accepted on its bucket.

        The write needs a volume server registered with the master, so once it passes,
        objects stored before a restart can be read again too.
        """
        admin, learner = info.admin, info.learner
        url = f"{admin['endpoint_url']}/{HEALTH_BUCKET}/probe"
        nonce = secrets.token_hex(8).encode()
        as_admin = Credentials(admin["access_key"], admin["secret_key"])
        as_learner = Credentials(learner["AWS_ACCESS_KEY_ID"], learner["AWS_SECRET_ACCESS_KEY"])
        try:
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=budget)
            ) as session:
                await _signed(session, as_admin, "PUT", url, nonce)
                got = await _signed(session, as_admin, "GET", url)
                await _signed(
                    session, as_learner, "HEAD", f"{admin['endpoint_url']}/{admin['bucket']}"
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise NotReady(f"cannot reach S3: {type(exc).__name__}") from None
        if got != nonce:
            raise NotReady("S3 did not return what was written")
        if slot.exposure is not None:
            await port_open(slot.local, info.extra["ports"][PUBLIC], budget)  # the TLS relay
        return f"S3 (SeaweedFS) serving bucket {admin['bucket']}"


async def _signed(
    session: aiohttp.ClientSession,
    credentials: Credentials,
    method: str,
    url: str,
    body: bytes = b"",
) -> bytes:
    """A SigV4-signed request; its body, or NotReady unless it answered 200."""
    request = AWSRequest(
        method=method, url=url, data=body, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}
    )
    S3SigV4Auth(credentials, "s3", REGION).add_auth(request)
    async with session.request(
        method, url, data=body, headers=dict(request.headers.items())
    ) as response:
        if response.status != 200:
            raise NotReady(f"{method} answered {response.status}")
        return await response.read()
