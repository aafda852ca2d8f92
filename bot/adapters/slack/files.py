"""Code shared with the app in its DM: a ``.zip``/``.tar.gz`` file downloaded with the bot token
under the data dir, with a size cap, before it is queued.

Slack rules followed here:

- a file shared in the app's DM arrives as a ``message`` event (``message.im``, subtype
  ``file_share``) whose ``files`` carry ``name``, ``size`` and ``url_private_download``
  (https://api.slack.com/events/message/file_share); a file object lacking them is completed
  with ``files.info`` (https://api.slack.com/methods/files.info, scope ``files:read``);
- private file URLs are downloaded with the bot token as ``Authorization: Bearer``
  (https://api.slack.com/types/file#authentication). The token goes only to Slack's own
  hosts (``files.slack.com`` or the Web API's host), never to a URL elsewhere.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.errors import CoachError
from bot.core.sources import MAX_ARCHIVE_BYTES, Upload, check_upload

log = logging.getLogger(__name__)

FILE_HOSTS = frozenset({"files.slack.com"})
DOWNLOAD_TIMEOUT_S = 120.0
CHUNK = 64 * 1024


def token_hosts(client: AsyncWebClient) -> frozenset[str]:
    """The hosts the bot token may be sent to: Slack's file host and the Web API's own."""
    api = urlsplit(client.base_url).hostname
    return FILE_HOSTS | ({api} if api else set())


async def complete(client: AsyncWebClient, file: dict[str, Any]) -> dict[str, Any]:
    """``file`` with its ``name``, ``size`` and ``url_private_download`` (``files.info`` when
    the event carried a partial file object)."""
    if file.get("url_private_download") and file.get("name"):
        return file
    try:
        info = await client.files_info(file=file["id"])
    except SlackApiError as exc:
        raise CoachError(
            f"could not read the file you shared ({exc.response.get('error')})"
        ) from None
    return dict(info["file"])


async def download(
    client: AsyncWebClient, file: dict[str, Any], data_dir: Path, *, cap: int = MAX_ARCHIVE_BYTES
) -> Path:
    """The shared file stored under ``data_dir/uploads``; :class:`CoachError` when it is not an
    archive, is over ``cap`` bytes, or cannot be downloaded (nothing is left behind then)."""
    file = await complete(client, file)
    name = str(file.get("name") or file.get("title") or "")
    check_upload(name, file.get("size"), cap=cap)
    url = str(file.get("url_private_download") or file.get("url_private") or "")
    if urlsplit(url).scheme not in {"https", "http"} or urlsplit(url).hostname not in token_hosts(
        client
    ):
        raise CoachError(f"{name!r} is not a file I can download from Slack")
    upload = Upload(data_dir, name, cap=cap)
    try:
        timeout = aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_S)
        headers = {"Authorization": f"Bearer {client.token}"}
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, headers=headers, allow_redirects=False) as response,
        ):
            if response.status != 200:
                raise CoachError(f"could not download {name!r} (HTTP {response.status})")
            if response.content_type == "text/html":  # Slack's sign-in page: the token was refused
                raise CoachError(f"Slack did not hand over {name!r} (is files:read granted?)")
            async for chunk in response.content.iter_chunked(CHUNK):
                upload.write(chunk)
        return upload.close()
    except (aiohttp.ClientError, TimeoutError) as exc:
        upload.discard()
        log.info("download of a shared file failed: %s", type(exc).__name__)
        raise CoachError(f"could not download {name!r}; share it again") from None
    except BaseException:
        upload.discard()
        raise
