"""Small helpers that talk to provisioned servers the way a learner's service would."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import boto3
import nats
from botocore.config import Config

TIMEOUT = 3.0


def with_port(url: str, port: int) -> str:
    """``url`` with the same credentials pointed at another port."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def s3_client(endpoint: str, key: str | None, secret: str | None, *, anonymous: bool = False):
    from botocore import UNSIGNED

    config = Config(
        s3={"addressing_style": "path"},
        retries={"total_max_attempts": 1},
        connect_timeout=TIMEOUT,
        read_timeout=TIMEOUT,
        signature_version=UNSIGNED if anonymous else None,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=config,
    )


def learner_s3(bundle: dict[str, str], endpoint: str | None = None):
    return s3_client(
        endpoint or bundle["S3_ENDPOINT_URL"],
        bundle["AWS_ACCESS_KEY_ID"],
        bundle["AWS_SECRET_ACCESS_KEY"],
    )


def admin_s3(admin: dict[str, str]):
    return s3_client(admin["endpoint_url"], admin["access_key"], admin["secret_key"])


async def nats_connect(url: str) -> nats.NATS:
    async def quiet(_: Exception) -> None:
        pass

    return await nats.connect(
        url,
        connect_timeout=TIMEOUT,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        error_cb=quiet,
    )
