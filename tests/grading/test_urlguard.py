"""The URL guard's decisions: resolve → classify → refuse, with an injected resolver.

Nothing here opens a connection: every hostile address is only classified.
"""

from __future__ import annotations

import ipaddress

import pytest

from grading.urlguard import (
    Policy,
    Target,
    TargetRefused,
    check_redirect,
    parse_ipv4_numeric,
    resolve_target,
)

STRICT = Policy(allow_loopback=False)
PUBLIC_IP = "93.184.215.14"


class Resolver:
    """A scripted resolver that records every lookup (and never touches the network)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


async def refused(url: str, policy: Policy = STRICT, resolver: Resolver | None = None) -> str:
    with pytest.raises(TargetRefused) as info:
        await resolve_target(url, policy, resolver or Resolver([PUBLIC_IP]))
    reason = info.value.reason
    assert reason.startswith("refused: ") and "\n" not in reason
    return reason


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://10.0.0.5/", "10.0.0.5 is a private address (set CRUSCIBLE_ALLOW_PRIVATE_TARGETS"),
        ("http://172.16.3.4:8080/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://100.64.0.1/", "private"),  # CGNAT
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://169.254.10.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fd00::1]/", "private"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://240.0.0.1/", "reserved"),
        ("http://192.0.2.1/", "reserved"),  # documentation range
        ("http://255.255.255.255/", "reserved"),
        ("http://127.0.0.1:8080/", "loopback address (set CRUSCIBLE_ALLOW_LOOPBACK_TARGETS"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "IPv4-mapped address of 127.0.0.1"),
        ("http://[::ffff:10.0.0.1]/", "IPv4-mapped address of 10.0.0.1, a private address"),
        ("http://[::10.0.0.1]/", "IPv4-compatible address of 10.0.0.1"),
        ("http://[2002:a00:1::]/", "6to4 address of 10.0.0.1"),
        ("http://[64:ff9b::a00:1]/", "NAT64 address of 10.0.0.1"),
        ("http://[64:ff9b::a9fe:a9fe]/", "NAT64 address of 169.254.169.254"),
        ("http://2130706433/", "127.0.0.1 is a loopback"),  # decimal
        ("http://0177.0.0.1/", "127.0.0.1 is a loopback"),  # octal
        ("http://0x7f.1/", "127.0.0.1 is a loopback"),  # hex, short form
        ("http://0x7f000001/", "127.0.0.1 is a loopback"),
        ("http://127.1/", "127.0.0.1 is a loopback"),
        ("http://012.0.0.1/", "10.0.0.1 is a private"),
        ("http://167772161/", "10.0.0.1 is a private"),
        ("http://0xa9.0xfe.0xa9.0xfe/", "cloud metadata"),
        ("http://0/", "0.0.0.0 is the unspecified"),
        ("http://127.0.0.1./", "loopback"),
    ],
)
async def test_hostile_literal_addresses_are_refused(url: str, fragment: str) -> None:
    resolver = Resolver([PUBLIC_IP])
    assert fragment in await refused(url, resolver=resolver)
    assert resolver.calls == []  # literals are never looked up


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
        "http://user:pass@example.com/",
        "http://user@example.com/",
        "http://127.0.0.1\\@example.com/",
        "http:///path",
        "http://:8080/",
        "http://example.com:0/",
        "http://example.com:99999/",
        "http://example.com:80:80/",
        "http://example.com:http/",
        "http://exa mple.com/",
        "http://example.com/\r\nHost: evil",
        "http://1.2.3.4.5/",
        "http://256.0.0.1/",
        "http://0x/",
        "http://09.0.0.1/",
        "http://example.123/",
        "http://-bad-.example.com/",
        "http://%31%32%37.0.0.1/",
        "http://[fe80::1%25eth0]/",
        "http://[not-ipv6]/",
    ],
)
async def test_malformed_urls_are_refused(url: str) -> None:
    await refused(url, policy=Policy())


async def test_hostname_resolving_to_private_is_refused_with_both_names() -> None:
    reason = await refused("http://internal.example/", resolver=Resolver(["10.1.2.3"]))
    assert reason == (
        "refused: internal.example resolves to 10.1.2.3, a private address "
        "(set CRUSCIBLE_ALLOW_PRIVATE_TARGETS to allow)"
    )


async def test_any_refused_answer_refuses_the_name() -> None:
    resolver = Resolver([PUBLIC_IP, "192.168.0.10"])
    assert "192.168.0.10" in await refused("http://mixed.example/", resolver=resolver)
    resolver = Resolver(["2606:4700::1", "::ffff:169.254.169.254"])
    assert "metadata" in await refused("http://mixed6.example/", resolver=resolver)


async def test_unresolvable_and_empty_answers_are_refused() -> None:
    async def failing(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    with pytest.raises(TargetRefused, match="does not resolve"):
        await resolve_target("http://nowhere.example/", STRICT, failing)
    assert "any address" in await refused("http://empty.example/", resolver=Resolver([]))
    assert "bad answer" in await refused("http://junk.example/", resolver=Resolver(["nonsense"]))


async def test_answers_that_change_are_resolved_once_and_pinned() -> None:
    resolver = Resolver([PUBLIC_IP], ["10.0.0.1"], ["127.0.0.1"])
    target = await resolve_target("https://Service.Example:8443/api/", STRICT, resolver)
    assert resolver.calls == [("service.example", 8443)]
    assert target == Target(
        url="https://service.example:8443/api",
        scheme="https",
        host="service.example",
        port=8443,
        ip=PUBLIC_IP,
        base_path="/api",
    )
    assert target.url_for("/v1/check") == "https://service.example:8443/api/v1/check"
    assert target.host_header == "service.example:8443"
    # the later (hostile) answers are never asked for: redirects to the same host reuse the pin
    check_redirect("/other", target, STRICT)
    assert len(resolver.calls) == 1


async def test_first_vetted_answer_is_pinned() -> None:
    resolver = Resolver(["2606:4700::1111", PUBLIC_IP])
    target = await resolve_target("http://dual.example/", STRICT, resolver)
    assert target.ip == "2606:4700::1111"
    assert target.port == 80 and target.base_path == "" and target.url == "http://dual.example/"


async def test_loopback_allowed_by_default_policy() -> None:
    target = await resolve_target("http://127.0.0.1:8081/", Policy())
    assert (target.host, target.ip, target.port) == ("127.0.0.1", "127.0.0.1", 8081)
    mapped = await resolve_target("http://[::ffff:127.0.0.1]:9000/", Policy())
    assert mapped.ip == "127.0.0.1"  # the mapped IPv4 address is what gets pinned
    localhost = await resolve_target(
        "http://localhost:9/", Policy(), Resolver(["::1", "127.0.0.1"])
    )
    assert localhost.ip == "::1" and localhost.host_header == "localhost:9"
    decimal = await resolve_target("http://2130706433:8000/", Policy())
    assert decimal.host == "127.0.0.1" and decimal.url == "http://127.0.0.1:8000/"


async def test_private_needs_the_policy_and_allow_list_is_exact() -> None:
    assert (await resolve_target("http://10.0.0.5/", Policy(allow_private=True))).ip == "10.0.0.5"
    allow = Policy(allow_cidrs=(ipaddress.ip_network("10.20.0.0/16"),))
    assert (await resolve_target("http://10.20.1.1/", allow)).ip == "10.20.1.1"
    assert "private" in await refused("http://10.21.1.1/", policy=allow)
    # an allow-listed IPv4 network also covers its IPv4-mapped form
    assert (await resolve_target("http://[::ffff:10.20.0.9]/", allow)).ip == "10.20.0.9"
    # allowing private addresses never allows metadata or link-local
    assert "metadata" in await refused("http://169.254.169.254/", policy=Policy(allow_private=True))


def test_policy_from_env() -> None:
    policy = Policy.from_env(
        {
            "CRUSCIBLE_ALLOW_LOOPBACK_TARGETS": "false",
            "CRUSCIBLE_ALLOW_PRIVATE_TARGETS": "1",
            "CRUSCIBLE_ALLOW_TARGET_CIDRS": "10.0.0.0/8, fd00::/8",
        }
    )
    assert not policy.allow_loopback and policy.allow_private
    assert [str(n) for n in policy.allow_cidrs] == ["10.0.0.0/8", "fd00::/8"]
    assert Policy.from_env({}) == Policy()


@pytest.mark.parametrize(
    ("location", "fragment"),
    [
        ("http://10.0.0.1/", "private"),
        ("http://169.254.169.254/latest", "metadata"),
        ("http://[::ffff:192.168.0.1]/", "private"),
        ("http://0x0a000001/", "10.0.0.1 is a private"),
        ("//10.0.0.1/x", "private"),
        ("http://evil.example/", "another host"),
        ("https://public.example:9443/x", "another origin"),
        ("ftp://public.example/", "only http"),
        ("http://u:p@public.example/", "credentials"),
    ],
)
async def test_redirects_to_hostile_places_are_refused(location: str, fragment: str) -> None:
    target = await resolve_target("http://public.example/", STRICT, Resolver([PUBLIC_IP]))
    with pytest.raises(TargetRefused, match=fragment):
        check_redirect(location, target, STRICT)


async def test_redirects_within_the_origin_are_allowed() -> None:
    target = await resolve_target("http://public.example/app", STRICT, Resolver([PUBLIC_IP]))
    for location in ("/elsewhere", "next", "http://PUBLIC.example/x", f"http://{PUBLIC_IP}/"):
        check_redirect(location, target, STRICT)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1.258", "10.1.1.2"),
        ("0xC0.0250.0x1.1", "192.168.1.1"),
        ("example.com", None),
    ],
)
def test_numeric_ipv4_forms_read_like_inet_aton(host: str, expected: str | None) -> None:
    got = parse_ipv4_numeric(host)
    assert (None if got is None else str(got)) == expected
