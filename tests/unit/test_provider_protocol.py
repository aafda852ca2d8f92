"""The provider's protocol module: the command line the driver writes is the one the provider
reads, and a ping answer is told from anything else on the port."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning import provider_protocol as protocol


def test_the_drivers_command_line_is_the_one_the_provider_parses() -> None:
    plain = protocol.argv("challenges.x.provider", 4100)
    assert plain[:2] == ["-m", "challenges.x.provider"]
    args = protocol.parse_args(plain[2:])
    assert (args.port, args.host, args.public_port) == (4100, "127.0.0.1", None)

    exposed = protocol.argv(
        "challenges.x.provider",
        4100,
        public=("0.0.0.0", 4443),
        tls=(Path("/srv/tls.crt"), Path("/srv/tls.key")),
    )
    args = protocol.parse_args(exposed[2:])
    assert (args.public_host, args.public_port) == ("0.0.0.0", 4443)
    assert (args.tls_cert, args.tls_key) == ("/srv/tls.crt", "/srv/tls.key")


def test_admin_routes_live_under_the_prefix_the_public_site_hides() -> None:
    routes = (protocol.PING, protocol.SCRIPT, protocol.CALLS, protocol.RESET)
    assert all(r.startswith(protocol.ADMIN_PREFIX + "/") for r in routes)
    assert not protocol.HEALTHZ.startswith(protocol.ADMIN_PREFIX)


def test_a_ping_answer_reads_back_and_anything_else_is_refused() -> None:
    assert protocol.read_ping(protocol.ping_answer(7)) == 7
    for other in ({"status": "ok"}, {"ok": "yes"}, [], "pong", None):
        with pytest.raises(ValueError, match="not a provider's ping answer"):
            protocol.read_ping(other)
