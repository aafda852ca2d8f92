"""URL shortener, reference design "no_cache": PostgreSQL only, a primary-key lookup per redirect.

Store: PostgreSQL only (``DATABASE_URL``); ``REDIS_URL`` is ignored. Every
redirect is ``SELECT url FROM links WHERE code = $1``: one round trip, one
index probe of the primary key, a prepared statement. Updates and deletes are
single-row statements in autocommit.

What it buys: there is one copy of every link, so there is nothing to
invalidate and nothing can be stale. A read that starts after an update was
acknowledged sees the update, always. A Redis outage cannot touch it.

The price: every redirect costs the database a lookup and a connection from
the pool for the length of a round trip. A primary-key lookup on a table that
fits in shared buffers is tens of microseconds of database work, so at a few
thousand reads per second the latency is fine; what grows with the read rate
is the database's CPU and the number of connections the service needs, and the
whole read path fails when PostgreSQL does (``503`` within a second). A cache
would take most of those reads off the database, and would then have to be
told about every write.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from challenges.service import add_health_check, run

from .. import contract
from ..postgres import PostgresLinks

NAME = "url-shortener/no_cache"
DEADLINE_S = 1.0


def build(env: Mapping[str, str]) -> web.Application:
    links = PostgresLinks(env["DATABASE_URL"], timeout_s=DEADLINE_S)
    app = contract.build_app(links, deadline_s=DEADLINE_S)
    add_health_check(app, "postgres", links.health)
    app.cleanup_ctx.append(links.lifecycle)
    return app


def main() -> None:
    run(NAME, build, required_env=["DATABASE_URL"])


if __name__ == "__main__":
    main()
