"""A small HTTP client for contract checks: pinned address, no redirects, bounded everything.

Every connection goes to :attr:`Target.ip` (a resolver that only ever answers the pinned
address), with the original host in the ``Host`` header and TLS SNI. Each request has a
timeout and a body-size cap, and its outcome — response or error — is an
:class:`Exchange` that can be shown to a learner and replayed with :meth:`Exchange.curl`.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json as jsonlib
import shlex
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from grading.urlguard import Target

USER_AGENT = "cruscible-grader/0.1"
DEFAULT_BODY_LIMIT = 1 << 20


@dataclass
class Exchange:
    """One request and what came back (a response, or an error saying why there was none)."""

    method: str
    url: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    elapsed_ms: float = 0.0
    error: str | None = None
    truncated: bool = False  # the body was longer than the client's cap
    resolve: str | None = None  # curl ``--resolve`` pin (host:port:ip) for a host name

    def text(self, limit: int | None = None) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced), cut to ``limit`` characters."""
        text = self.body.decode("utf-8", "replace")
        if limit is not None and len(text) > limit:
            return text[:limit] + "…"
        return text

    def json(self) -> Any:
        """The body parsed as JSON; ValueError with a readable message when it is not."""
        where = f"{self.method} {self.url}"
        if self.error is not None:
            raise ValueError(f"{where} got no response ({self.error}), so no JSON body")
        if not self.body:
            raise ValueError(f"{where} answered {self.status} with an empty body, expected JSON")
        if self.truncated:
            raise ValueError(f"{where} answered a body over {len(self.body)} bytes (cut off)")
        try:
            return jsonlib.loads(self.body)
        except (UnicodeDecodeError, jsonlib.JSONDecodeError) as exc:
            raise ValueError(
                f"{where} answered {self.status} with a body that is not JSON ({exc}): "
                f"{self.text(200)!r}"
            ) from None

    def curl(self) -> str:
        """A shell line that sends the same request with curl."""
        args = ["curl", "-sS", "-i"]
        if self.method == "HEAD":
            args.append("-I")
        elif self.method != "GET" or self.request_body:
            args += ["-X", self.method]
        if self.resolve:
            args += ["--resolve", self.resolve]
        args.append(self.url)
        for name, value in self.request_headers.items():
            args += ["-H", f"{name}: {value}"]
        prefix = ""
        if self.request_body:
            try:
                args += ["--data-binary", self.request_body.decode("utf-8")]
            except UnicodeDecodeError:
                escaped = "".join(f"\\x{b:02x}" for b in self.request_body)
                prefix = f"printf {shlex.quote(escaped)} | "
                args += ["--data-binary", "@-"]
        return prefix + " ".join(shlex.quote(a) for a in args)


class PinnedResolver(AbstractResolver):
    """Answers the pinned address for the target's host, and refuses every other name."""

    def __init__(self, target: Target) -> None:
        self._target = target

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host.lower().rstrip(".") != self._target.host:
            raise OSError(errno.EACCES, f"the grader only connects to {self._target.host}")
        ip = self._target.ip
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        return [
            ResolveResult(
                hostname=host, host=ip, port=port, family=fam, proto=0, flags=socket.AI_NUMERICHOST
            )
        ]

    async def close(self) -> None:
        return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def describe_error(exc: BaseException, timeout_s: float) -> str:
    """A short, stable description of why a request got no response."""
    if isinstance(exc, TimeoutError):
        return f"timeout after {timeout_s:g}s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return f"connect failed: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "reset: the server closed the connection without a complete response"
    if isinstance(exc, ConnectionResetError | aiohttp.ClientOSError) and getattr(
        exc, "errno", None
    ) in (errno.ECONNRESET, errno.EPIPE):
        return "reset: the connection was reset by the server"
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return f"bad response: {getattr(exc, 'message', None) or exc}"
    if isinstance(exc, ssl.SSLError | aiohttp.ClientSSLError):
        return f"tls: {exc}"
    return f"{type(exc).__name__}: {exc}"


class Client:
    """HTTP to one :class:`Target`; use as ``async with Client(target) as http: ...``."""

    def __init__(
        self,
        target: Target,
        *,
        timeout_s: float = 5.0,
        body_limit: int = DEFAULT_BODY_LIMIT,
        connections: int = 100,
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.body_limit = body_limit
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        literal = _is_ip(target.host)
        host = target.ip if literal else target.host
        host = f"[{host}]" if ":" in host else host
        self._base = f"{target.scheme}://{host}:{target.port}{target.base_path}"
        self._resolve = None if literal else f"{target.host}:{target.port}:{target.ip}"
        if self._resolve and ":" in target.ip:
            self._resolve = f"{target.host}:{target.port}:[{target.ip}]"

    async def __aenter__(self) -> Client:
        connector = aiohttp.TCPConnector(
            resolver=PinnedResolver(self.target), limit=self._connections, use_dns_cache=False
        )
        self._session = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": USER_AGENT}, trust_env=False
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Exchange:
        """Send one request; never raises for network or protocol trouble (see ``error``)."""
        if self._session is None:
            raise RuntimeError("use the Client as an async context manager")
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        if json is not None and body is not None:
            raise ValueError("pass json or body, not both")
        sent_headers = dict(headers or {})
        if json is not None:
            body = jsonlib.dumps(json).encode()
            if not any(k.lower() == "content-type" for k in sent_headers):
                sent_headers["Content-Type"] = "application/json"
        timeout = self.timeout_s if timeout_s is None else timeout_s
        ex = Exchange(
            method=method.upper(),
            url=self.target.url_for(path),
            request_headers=sent_headers,
            request_body=body or b"",
            resolve=self._resolve,
        )
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                await self._send(ex, self._base + path)
        except Exception as exc:
            ex.error = describe_error(exc, timeout)
        ex.elapsed_ms = (time.perf_counter() - started) * 1000
        return ex

    async def _send(self, ex: Exchange, url: str) -> None:
        assert self._session is not None
        async with self._session.request(
            ex.method,
            url,
            data=ex.request_body or None,
            headers=ex.request_headers,
            allow_redirects=False,
        ) as resp:
            ex.status = resp.status
            ex.response_headers = {k: v for k, v in resp.headers.items()}
            chunks: list[bytes] = []
            size = 0
            while size <= self.body_limit:
                chunk = await resp.content.read(self.body_limit + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            data = b"".join(chunks)
            ex.truncated = len(data) > self.body_limit
            ex.body = data[: self.body_limit]


class NotHealthy(Exception):
    """The service never answered its health check within the deadline."""


async def wait_healthy(
    client: Client, path: str = "/healthz", deadline_s: float = 30.0, refused_s: float = 3.0
) -> Exchange:
    """Poll ``GET path`` with backoff until it answers 200; raise :class:`NotHealthy` if never.

    A service that answers anything (even 503) or times out is waited for until ``deadline_s``
    (it may be starting). A port where nothing listens — every attempt refused for
    ``refused_s`` seconds — is given up on at once, since waiting cannot help: the error says so.
    """
    loop = asyncio.get_running_loop()
    refused_since: float | None = loop.time()  # None once anything answered
    end = loop.time() + deadline_s
    delay, attempts = 0.05, 0
    while True:
        remaining = end - loop.time()
        ex = await client.request("GET", path, timeout_s=max(0.1, min(client.timeout_s, remaining)))
        attempts += 1
        if ex.status == 200:
            return ex
        if ex.error != "connection refused":
            refused_since = None  # something answered: wait for it until the deadline
        elif refused_since is not None and loop.time() - refused_since >= refused_s:
            raise NotHealthy(
                f"GET {ex.url}: connection refused for {refused_s:g} s ({attempts} attempts): "
                "nothing listens on that port — is the service running and listening there?"
            )
        remaining = end - loop.time()
        if remaining <= 0:
            last = ex.error or f"answered {ex.status}: {ex.text(120)!r}"
            raise NotHealthy(
                f"GET {ex.url} did not answer 200 within {deadline_s:g} s "
                f"({attempts} attempts); last: {last}"
            )
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 1.6, 1.0)
