"""The URL guard: decide whether a submitted URL may be graded, and pin the address to use.

A submitted URL is parsed strictly, its host resolved exactly once, and every address it
resolves to classified with :mod:`ipaddress`. If any address is refused, the URL is
refused; otherwise the first answer is pinned in a :class:`Target` and every later
connection of the grade goes to that address (no re-resolution, so a DNS answer that
changes between lookups cannot steer the grader elsewhere).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

RESOLVE_TIMEOUT_S = 5.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_ULA = ipaddress.ip_network("fc00::/7")
_METADATA = ipaddress.ip_address("169.254.169.254")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_HOSTNAME = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


class TargetRefused(Exception):
    """The URL may not be graded; ``reason`` is one line a learner can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Policy:
    """Which kinds of address a grade may connect to."""

    allow_loopback: bool = True
    allow_private: bool = False
    allow_cidrs: tuple[IPNetwork, ...] = field(default=())

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Policy:
        """Read ``CRUSCIBLE_ALLOW_LOOPBACK_TARGETS``, ``..._PRIVATE_TARGETS``, ``..._TARGET_CIDRS``."""
        env = os.environ if environ is None else environ

        def flag(name: str, default: bool) -> bool:
            value = env.get(name)
            return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")

        cidrs = env.get("CRUSCIBLE_ALLOW_TARGET_CIDRS", "")
        return cls(
            allow_loopback=flag("CRUSCIBLE_ALLOW_LOOPBACK_TARGETS", True),
            allow_private=flag("CRUSCIBLE_ALLOW_PRIVATE_TARGETS", False),
            allow_cidrs=parse_cidrs(c for c in cidrs.split(",") if c.strip()),
        )


def parse_cidrs(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse CIDR strings (``"10.1.0.0/16"``) for :attr:`Policy.allow_cidrs`."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


@dataclass(frozen=True)
class Target:
    """A vetted URL and the one address every connection of the grade goes to."""

    url: str
    scheme: str
    host: str  # as written (lower-cased), or the canonical form of an IP literal
    port: int
    ip: str  # the pinned address
    base_path: str  # without a trailing slash; "" for the root

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if _DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host_header}"

    def url_for(self, path: str) -> str:
        """The absolute URL of ``path`` (which starts with ``/``) under the base path."""
        return f"{self.origin}{self.base_path}{path}"


def parse_ipv4_numeric(host: str) -> ipaddress.IPv4Address | None:
    """Read ``host`` the way ``inet_aton`` does (``2130706433``, ``0177.0.0.1``, ``0x7f.1``).

    Returns None when ``host`` is not written as numbers; raises ValueError when it is
    but is not a valid address (``1.2.3.4.5``, ``256.0.0.1``).
    """
    labels = host.lower().split(".")
    if not all(_NUMERIC_LABEL.match(label) for label in labels):
        return None
    if len(labels) > 4:
        raise ValueError(f"{host} has more than four numeric parts")
    parts = []
    for label in labels:
        if label.startswith("0x"):
            if label == "0x":
                raise ValueError(f"{host} has an empty hexadecimal part")
            parts.append(int(label, 16))
        elif len(label) > 1 and label.startswith("0"):
            if not set(label) <= set("01234567"):
                raise ValueError(f"{host} has an invalid octal part {label}")
            parts.append(int(label, 8))
        else:
            parts.append(int(label))
    *head, last = parts
    if any(p > 255 for p in head) or last >= 256 ** (5 - len(parts)):
        raise ValueError(f"{host} is out of range for an IPv4 address")
    value = last
    for i, p in enumerate(head):
        value |= p << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _kind(ip: IPAddress, policy: Policy) -> str | None:
    """Why ``ip`` is refused under ``policy`` (a noun phrase), or None when it is allowed."""
    if any(ip.version == net.version and ip in net for net in policy.allow_cidrs):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            label, v4s = embedded
            for v4 in v4s:
                why = _kind(v4, policy)
                if why is not None:
                    return f"{label} of {v4}, {why}"
            if label == "an IPv4-mapped address":
                return None  # the pinned address is the IPv4 one itself
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return None if policy.allow_loopback else "a loopback address"
    if ip == _METADATA:
        return "the cloud metadata address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if _is_private(ip):
        return None if policy.allow_private else "a private address"
    if isinstance(ip, ipaddress.IPv6Address) and ip in _IPV4_COMPATIBLE:
        return "a deprecated IPv4-compatible IPv6 address"
    if ip.is_reserved or not ip.is_global:
        return "a reserved or non-routable address"
    return None


def _is_private(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv4Address):
        return ip in _CGNAT or any(ip in net for net in _RFC1918)
    return ip in _ULA


def _embedded_ipv4(
    ip: ipaddress.IPv6Address,
) -> tuple[str, list[ipaddress.IPv4Address]] | None:
    """IPv4 addresses carried inside an IPv6 one (mapped, 6to4, Teredo, NAT64)."""
    if ip.ipv4_mapped is not None:
        return "an IPv4-mapped address", [ip.ipv4_mapped]
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:
        return "an IPv4-compatible address", [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return "a 6to4 address", [ip.sixtofour]
    if ip.teredo is not None:
        return "a Teredo address", list(ip.teredo)
    if ip in _NAT64:
        return "a NAT64 address", [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip in _NAT64_LOCAL:
        return "a local-use NAT64 address", [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return None


def _hint(kind: str) -> str:
    if kind.endswith("a private address"):
        return " (set CRUSCIBLE_ALLOW_PRIVATE_TARGETS to allow)"
    if kind.endswith("a loopback address"):
        return " (set CRUSCIBLE_ALLOW_LOOPBACK_TARGETS to allow)"
    return ""


def check_address(ip: str | IPAddress, policy: Policy, host: str | None = None) -> IPAddress:
    """Classify one address; return the address to pin, or raise :class:`TargetRefused`."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0] if isinstance(ip, str) else ip)
    why = _kind(addr, policy)
    if why is not None:
        subject = f"{addr} is" if host in (None, str(addr)) else f"{host} resolves to {addr},"
        raise TargetRefused(f"refused: {subject} {why}{_hint(why)}")
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@dataclass(frozen=True)
class _Parsed:
    scheme: str
    host: str
    literal: IPAddress | None
    port: int
    base_path: str


def _parse(url: str) -> _Parsed:
    if any(c in url for c in "\t\r\n ") or any(ord(c) < 0x20 for c in url):
        raise TargetRefused("refused: the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise TargetRefused(f"refused: malformed URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise TargetRefused(f"refused: only http:// and https:// URLs can be graded, not {url!r}")
    if "@" in parts.netloc:
        raise TargetRefused("refused: URLs with credentials (user@host) are not accepted")
    try:
        port = parts.port
    except ValueError:
        raise TargetRefused(f"refused: bad port in {url!r}") from None
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    elif not 0 < port < 65536:
        raise TargetRefused(f"refused: port {port} is out of range")
    raw_host = parts.hostname or ""
    if not raw_host:
        raise TargetRefused(f"refused: no host in {url!r}")
    host, literal = _parse_host(raw_host, bracketed=parts.netloc.startswith("["))
    return _Parsed(scheme, host, literal, port, parts.path.rstrip("/"))


def _parse_host(raw: str, *, bracketed: bool) -> tuple[str, IPAddress | None]:
    if bracketed:
        if "%" in raw:
            raise TargetRefused("refused: IPv6 zone identifiers are not accepted")
        try:
            ip = ipaddress.IPv6Address(raw)
        except ValueError:
            raise TargetRefused(f"refused: [{raw}] is not a valid IPv6 address") from None
        return str(ip), ip
    host = raw[:-1] if raw.endswith(".") else raw
    try:
        v4 = parse_ipv4_numeric(host)
    except ValueError as exc:
        raise TargetRefused(f"refused: {exc}") from None
    if v4 is not None:
        return str(v4), v4
    try:
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise TargetRefused(f"refused: {raw!r} is not a valid host name") from None
    if not _HOSTNAME.match(host) or len(host) > 253:
        raise TargetRefused(f"refused: {raw!r} is not a valid host name")
    if _NUMERIC_LABEL.match(host.rsplit(".", 1)[-1]):
        raise TargetRefused(f"refused: {raw!r} is neither an IPv4 address nor a host name")
    return host, None


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with the system resolver (``getaddrinfo``), addresses in answer order."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve_target(url: str, policy: Policy, resolver: Resolver | None = None) -> Target:
    """Vet ``url`` under ``policy`` and pin the address to connect to (resolved once)."""
    parsed = _parse(url)
    if parsed.literal is not None:
        ip = check_address(parsed.literal, policy)
    else:
        resolve = resolver or system_resolver
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                answers = await resolve(parsed.host, parsed.port)
        except TimeoutError:
            raise TargetRefused(
                f"refused: resolving {parsed.host} took over {RESOLVE_TIMEOUT_S:g} s"
            ) from None
        except OSError as exc:
            raise TargetRefused(f"refused: {parsed.host} does not resolve ({exc})") from None
        if not answers:
            raise TargetRefused(f"refused: {parsed.host} does not resolve to any address")
        try:
            pinned = [check_address(a, policy, parsed.host) for a in answers]
        except ValueError as exc:
            raise TargetRefused(
                f"refused: {parsed.host} resolved to a bad answer ({exc})"
            ) from None
        ip = pinned[0]
    netloc = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    if parsed.port != _DEFAULT_PORTS[parsed.scheme]:
        netloc += f":{parsed.port}"
    return Target(
        url=f"{parsed.scheme}://{netloc}{parsed.base_path or '/'}",
        scheme=parsed.scheme,
        host=parsed.host,
        port=parsed.port,
        ip=str(ip),
        base_path=parsed.base_path,
    )


def check_redirect(location: str, target: Target, policy: Policy) -> None:
    """Raise :class:`TargetRefused` unless a redirect to ``location`` may be followed.

    Only the pinned origin is followed without a new lookup: a redirect to an IP literal
    is classified like a submitted URL, and one to another host name is refused (the
    grader never resolves a second name during a grade).
    """
    parsed = _parse(urljoin(target.url, location))
    if parsed.literal is not None:
        check_address(parsed.literal, policy)
        return
    if parsed.host != target.host:
        raise TargetRefused(
            f"refused: redirect to another host ({parsed.host}); only {target.host} is followed"
        )
    if parsed.scheme != target.scheme or parsed.port != target.port:
        raise TargetRefused(
            f"refused: redirect to {parsed.scheme}://{parsed.host}:{parsed.port}, "
            f"another origin than {target.origin}"
        )
