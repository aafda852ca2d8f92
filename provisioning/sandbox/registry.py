"""The package registry a build box may reach, and the egress proxy that enforces it.

Which registry: the host's pip configuration (``pip config list``; ``PIP_INDEX_URL``,
``PIP_EXTRA_INDEX_URL``, ``PIP_FIND_LINKS`` override it), default https://pypi.org/simple
with its files on files.pythonhosted.org (https://pip.pypa.io/en/stable/topics/configuration/).
``http(s)`` indexes are reached through a CONNECT proxy that allows only their hosts and
answers ``403`` to anything else *before* resolving or connecting
(https://www.rfc-editor.org/rfc/rfc9110#name-connect); ``file://`` indexes and find-links
directories are mounted read-only into the box.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from provisioning.sandbox.relay import Listener, splice

log = logging.getLogger(__name__)

PYPI = "https://pypi.org/simple"
PYPI_FILES = "files.pythonhosted.org"
MAX_HEAD = 16 * 1024


@dataclass(frozen=True)
class Registry:
    """``index_url``/``extra_index_urls``/``find_links`` as pip gets them inside the box;
    ``hosts``: ``(host, port)`` pairs the proxy lets through; ``paths``: host directories
    mounted read-only at the same place (``file://`` indexes, find-links)."""

    index_url: str
    extra_index_urls: tuple[str, ...]
    find_links: tuple[str, ...]
    hosts: frozenset[tuple[str, int]]
    paths: tuple[Path, ...]

    def env(self, proxy: str) -> dict[str, str]:
        """pip's settings inside the box (``PIP_CONFIG_FILE=/dev/null``: the host's own
        configuration is not mounted)."""
        env = {
            "PIP_CONFIG_FILE": "/dev/null",
            "PIP_INDEX_URL": self.index_url,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "HTTPS_PROXY": proxy,
            "HTTP_PROXY": proxy,
            "https_proxy": proxy,
            "http_proxy": proxy,
            "NO_PROXY": "",
            "PIP_NO_CACHE_DIR": "1",
        }
        if self.extra_index_urls:
            env["PIP_EXTRA_INDEX_URL"] = " ".join(self.extra_index_urls)
        if self.find_links:
            env["PIP_FIND_LINKS"] = " ".join(self.find_links)
        return env


def _pip_config() -> dict[str, str]:
    """``pip config list`` as ``{"global.index-url": "..."}`` (last one wins, like pip)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        with contextlib.suppress(ValueError):
            value = " ".join(shlex.split(value))
        out[key.rsplit(".", 1)[-1]] = value
    return out


def from_settings(index_url: str | None, extra: list[str], find_links: list[str]) -> Registry:
    """The registry for these pip settings (``None`` index: PyPI)."""
    index = index_url or PYPI
    hosts: set[tuple[str, int]] = set()
    paths: list[Path] = []
    for url in [index, *extra, *find_links]:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.hostname:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            hosts.add((parts.hostname.lower(), port))
            if parts.hostname.lower() == "pypi.org":
                hosts.add((PYPI_FILES, 443))
        elif parts.scheme == "file" or not parts.scheme:
            path = Path(parts.path if parts.scheme else url)
            if path.exists():
                path = path if path.is_dir() else path.parent
                # A file index's pages link to its files by relative paths ("../../files/"),
                # so mount the tree above ".../simple".
                paths.append(path.parent if path.name == "simple" else path)
    return Registry(index, tuple(extra), tuple(find_links), frozenset(hosts), tuple(paths))


@cache
def host_registry() -> Registry:
    """The registry this host's pip is configured for (environment over config files)."""
    conf = _pip_config()
    index = os.environ.get("PIP_INDEX_URL") or conf.get("index-url")
    extra = (os.environ.get("PIP_EXTRA_INDEX_URL") or conf.get("extra-index-url") or "").split()
    links = (os.environ.get("PIP_FIND_LINKS") or conf.get("find-links") or "").split()
    return from_settings(index, extra, links)


def _authority(target: str) -> tuple[str, int] | None:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return None
    host = host.strip("[]").lower()
    return (host, int(port)) if host else None


_HOP_BY_HOP = (b"connection:", b"proxy-connection:", b"keep-alive:", b"proxy-authorization:")


def _origin_form(head: bytes, method: str, path: str, query: str) -> bytes:
    """The request as the origin server gets it: origin-form target, one request per
    connection (RFC 9112 section 3.2.1: https://www.rfc-editor.org/rfc/rfc9112#section-3.2.1)."""
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    target = path + (f"?{query}" if query else "")
    first = f"{method} {target} HTTP/1.1".encode("latin-1")
    kept = [h for h in lines[1:] if not h.lower().startswith(_HOP_BY_HOP)]
    return b"\r\n".join([first, *kept, b"Connection: close", b"", b""])


async def _answer(writer: asyncio.StreamWriter, status: str, body: str) -> None:
    data = body.encode()
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(data)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + data
    )
    with contextlib.suppress(ConnectionError, OSError):
        await writer.drain()
    writer.close()


class Proxy:
    """An HTTP proxy on a socket file that tunnels (CONNECT) or forwards (absolute-form
    ``http://``) only to the allowed ``(host, port)`` pairs. ``refused`` lists what it denied,
    as ``"host:port"``, for the build log."""

    def __init__(
        self,
        allowed: frozenset[tuple[str, int]],
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        """``on_refused`` is called with each refusal as it is appended to ``refused``."""
        self.allowed = allowed
        self.refused: list[str] = []
        self._on_refused = on_refused
        self._listener = Listener()

    async def serve(self, path: Path) -> None:
        """Listen on the socket file ``path`` (the box reaches it as a forwarded port)."""
        await self._listener.serve(path, self._handle)

    async def close(self) -> None:
        """Stop listening and end every open tunnel."""
        await self._listener.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.close()
            return
        if len(head) > MAX_HEAD:
            await _answer(writer, "431 Request Header Fields Too Large", "")
            return
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split()
        if len(parts) != 3:
            await _answer(writer, "400 Bad Request", "malformed request line\n")
            return
        method, target, _version = parts
        if method.upper() == "CONNECT":
            where = _authority(target)
            rest = b""
        else:
            url = urlsplit(target)
            where = None
            if url.scheme == "http" and url.hostname:
                where = (url.hostname.lower(), url.port or 80)
            rest = _origin_form(head, method, url.path or "/", url.query)
        if where is None or where not in self.allowed:
            denied = target if where is None else f"{where[0]}:{where[1]}"
            self.refused.append(denied)
            if self._on_refused is not None:
                self._on_refused(denied)
            await _answer(
                writer, "403 Forbidden", f"{target} is not the package registry of this host\n"
            )
            return
        try:
            upstream = await asyncio.wait_for(asyncio.open_connection(*where), 30)
        except (OSError, TimeoutError) as exc:
            await _answer(writer, "502 Bad Gateway", f"cannot reach {where[0]}: {exc}\n")
            return
        if rest:
            upstream[1].write(rest)
        else:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await splice((reader, writer), upstream)
