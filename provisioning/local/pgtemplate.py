"""A PostgreSQL data directory made once with initdb and cloned for every environment."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from provisioning.backend import ProvisioningError
from provisioning.local import binaries, layout
from provisioning.local.driver import password
from provisioning.local.users import RunAs

log = logging.getLogger(__name__)

SUPERUSER = "postgres"
LEARNER = "app"  # the learner's role and database
SETTINGS = """
# --- cruscible: tuned for many small, short-lived, disposable clusters ---
# fsync off: data survives a killed server (the OS has it), not a machine crash.
# synchronous_commit stays on so that a commit is in the OS before it is acknowledged.
fsync = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 50
max_wal_size = 256MB
io_method = sync
jit = off
password_encryption = scram-sha-256
shared_preload_libraries = '{preload}'
pg_stat_statements.track = all
"""
HBA = """# cruscible: passwords only, loopback TCP and the private socket
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
"""


@cache
def version() -> str:
    out = subprocess.run(
        [str(binaries.postgres_bin_dir() / "postgres"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()[-1]


def has_pg_stat_statements() -> bool:
    lib = binaries.postgres_bin_dir().parent / "lib"
    return any((lib / sub / "pg_stat_statements.so").exists() for sub in ("", "postgresql"))


def _run(argv: list[str], run_as: RunAs, stdin: str = "") -> None:
    done = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        user=run_as.uid,
        group=run_as.gid,
        extra_groups=[] if run_as.uid is not None else None,
        umask=0o077,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0 or "ERROR:" in output:
        raise ProvisioningError(
            f"{Path(argv[0]).name} failed while making the template:\n{output[-2000:]}"
        )


def _build(target: Path, run_as: RunAs) -> None:
    bin_dir = binaries.postgres_bin_dir()
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        run_as.own(work)
        pw_file = work / "superuser.pw"
        pw_file.write_text(password())
        run_as.own(pw_file)
        data = work / "data"
        _run(
            [
                str(bin_dir / "initdb"),
                "-D", str(data),
                "-U", SUPERUSER,
                f"--pwfile={pw_file}",
                "-A", "scram-sha-256",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            run_as,
        )  # fmt: skip
        preload = "pg_stat_statements" if has_pg_stat_statements() else ""
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(SETTINGS.format(preload=preload))
        (data / "pg_hba.conf").write_text(HBA)
        single = [str(bin_dir / "postgres"), "--single", "-D", str(data)]
        _run(
            [*single, "template1"],
            run_as,
            f"CREATE ROLE {LEARNER} NOLOGIN;\nCREATE DATABASE {LEARNER} OWNER {LEARNER};\n",
        )
        if preload:
            _run([*single, LEARNER], run_as, "CREATE EXTENSION pg_stat_statements;\n")
        run_as.own(work)
        os.rename(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def template(templates_dir: Path, run_as: RunAs) -> Path:
    """The template for this PostgreSQL version, made on first use (once, under a lock)."""
    digest = hashlib.sha256((SETTINGS + HBA).encode()).hexdigest()[:8]
    target = templates_dir / f"postgres-{version()}-{digest}"
    if target.is_dir():
        return target
    layout.make_traversable(templates_dir)  # initdb runs as the service user inside it
    fd = os.open(templates_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not target.is_dir():
            log.info("making the PostgreSQL %s template in %s", version(), target)
            _build(target, run_as)
    finally:
        os.close(fd)
    return target


def clone(template_dir: Path, dest: Path) -> str:
    """Copy the template's data directory to ``dest``; return the template superuser password."""
    subprocess.run(["cp", "-a", str(template_dir / "data"), str(dest)], check=True)
    return (template_dir / "superuser.pw").read_text().strip()
