"""Lifecycle over a real backend: quotas, extension ceiling, reaping, crash reconciliation, leases."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from provisioning.backend import Backend, ProvisioningError
from provisioning.backends import make_backend
from provisioning.local.ports import PortPool, port_is_free
from provisioning.manager import Provisioner
from provisioning.spec import EnvironmentSpec, Resource

from .conftest import containers_of, marked_pids

REDIS_ONLY = (Resource.REDIS,)
ROOT = Path(__file__).resolve().parents[2]


def backend_dir(backend: Backend) -> Path:
    return Path(backend.data_dir)  # type: ignore[attr-defined]


async def test_quotas_and_ttl_limits(backend: Backend) -> None:
    prov = Provisioner(backend, max_per_owner=1, max_ttl=timedelta(hours=1))
    first = await prov.up(
        EnvironmentSpec(resources=REDIS_ONLY, owner="quota", ttl=timedelta(minutes=5))
    )
    try:
        with pytest.raises(ProvisioningError, match="limit is 1"):
            await prov.up(EnvironmentSpec(resources=REDIS_ONLY, owner="quota"))
        with pytest.raises(ProvisioningError, match="ttl"):
            await prov.up(
                EnvironmentSpec(resources=REDIS_ONLY, owner="other", ttl=timedelta(hours=2))
            )
        total = len(await backend.list())
        with pytest.raises(ProvisioningError, match="at its limit"):
            await Provisioner(backend, max_total=total).up(
                EnvironmentSpec(resources=REDIS_ONLY, owner="other")
            )
    finally:
        await prov.down(first.id)
    assert await backend.get(first.id) is None


async def test_extend_stops_at_the_ceiling(backend: Backend) -> None:
    prov = Provisioner(backend, max_ttl=timedelta(hours=2))
    env = await prov.up(
        EnvironmentSpec(resources=REDIS_ONLY, owner="extend", ttl=timedelta(hours=1))
    )
    try:
        longer = await prov.extend(env.id, timedelta(minutes=30))
        assert longer.expires_at == env.expires_at + timedelta(minutes=30)
        capped = await prov.extend(env.id, timedelta(hours=5))
        assert capped.expires_at == env.created_at + timedelta(hours=2)
        stored = await backend.get(env.id)
        assert stored is not None and stored.expires_at == capped.expires_at
        with pytest.raises(ProvisioningError, match="ceiling"):
            await prov.extend(env.id, timedelta(minutes=1))
    finally:
        await prov.down(env.id)


async def test_reap_destroys_only_expired_environments(backend: Backend) -> None:
    prov = Provisioner(backend)
    short = await prov.up(
        EnvironmentSpec(resources=REDIS_ONLY, owner="reap", ttl=timedelta(minutes=1))
    )
    long = await prov.up(
        EnvironmentSpec(resources=REDIS_ONLY, owner="reap", ttl=timedelta(hours=1))
    )
    try:
        later = Provisioner(backend, clock=lambda: datetime.now(UTC) + timedelta(minutes=5))
        assert await later.reap() == [short.id]
        assert await backend.get(short.id) is None
        assert marked_pids(backend_dir(backend), short.id) == []
        assert await backend.get(long.id) is not None
    finally:
        await prov.down(long.id)
    assert marked_pids(backend_dir(backend), long.id) == []


async def test_what_runs_next_to_an_environment_stops_before_its_teardown(
    backend: Backend,
) -> None:
    """A kept hosted submission registers its stop with ``on_teardown``: the reaper at the TTL
    and ``down`` both run it first, once; another environment's stays registered."""
    clock = [datetime.now(UTC)]
    prov = Provisioner(backend, clock=lambda: clock[0])
    spec = EnvironmentSpec(resources=REDIS_ONLY, owner="kept", ttl=timedelta(minutes=1))
    reaped, destroyed = await prov.up(spec), await prov.up(spec)
    stopped: list[tuple[str, bool]] = []

    def stop(env_id: str):  # type: ignore[no-untyped-def]
        async def run() -> None:
            stopped.append((env_id, await backend.get(env_id) is not None))

        return run

    prov.on_teardown(reaped.id, stop(reaped.id))
    prov.on_teardown(destroyed.id, stop(destroyed.id))
    try:
        await prov.extend(destroyed.id, timedelta(hours=1))
        clock[0] += timedelta(minutes=5)
        assert await prov.reap() == [reaped.id]
        assert stopped == [(reaped.id, True)]  # stopped while the environment still existed
        await prov.down(destroyed.id)
        assert stopped == [(reaped.id, True), (destroyed.id, True)]
    finally:
        for env in (reaped, destroyed):
            if await backend.get(env.id) is not None:
                await prov.down(env.id)
    assert len(stopped) == 2


async def test_destroy_is_idempotent(backend: Backend) -> None:
    env = await backend.create(
        "env-twice", EnvironmentSpec(resources=(Resource.POSTGRES, Resource.REDIS))
    )
    await backend.destroy(env.id)
    await backend.destroy(env.id)
    await backend.destroy("env-never")
    assert await backend.get(env.id) is None
    assert marked_pids(backend_dir(backend), env.id) == []
    assert containers_of(backend, env.id) == []
    with pytest.raises(ProvisioningError, match="invalid"):
        await backend.destroy("../etc")


CREATOR = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from provisioning.backends import make_backend
    from tests.provisioning.conftest import spec

    async def main(name, data_dir, env_id):
        backend = make_backend(name, Path(data_dir))
        print("creating", flush=True)
        await backend.create(env_id, spec())
        print("created", flush=True)
        time.sleep(600)

    asyncio.run(main(*sys.argv[1:]))
    """
)


def _creator(backend: Backend, env_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CREATOR, backend.name, str(backend_dir(backend)), env_id],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def test_reconcile_after_the_creator_was_killed(backend: Backend) -> None:
    """A process made environments then died by SIGKILL (once done, once mid-create)."""
    data_dir = backend_dir(backend)
    done = _creator(backend, "env-crash1")
    midway = _creator(backend, "env-crash2")
    assert await asyncio.to_thread(done.stdout.readline) == "creating\n"  # type: ignore[union-attr]
    assert await asyncio.to_thread(midway.stdout.readline) == "creating\n"  # type: ignore[union-attr]
    await asyncio.sleep(0.5)
    midway.send_signal(signal.SIGKILL)
    assert await asyncio.to_thread(done.stdout.readline) == "created\n"  # type: ignore[union-attr]
    done.send_signal(signal.SIGKILL)
    done.wait()
    midway.wait()
    assert marked_pids(data_dir, "env-crash1"), "the finished environment should still be running"

    fresh = make_backend(backend.name, data_dir)
    gone = await Provisioner(fresh).reconcile(
        known={e.id for e in await fresh.list()} - {"env-crash1", "env-crash2"}
    )
    assert "env-crash1" in gone
    for env_id in ("env-crash1", "env-crash2"):
        assert marked_pids(data_dir, env_id) == []
        assert not (data_dir / "envs" / env_id).exists()
        assert fresh.ports.leased(env_id) == []  # type: ignore[attr-defined]
        assert containers_of(fresh, env_id) == []
    await fresh.close()


async def test_reconcile_spares_what_a_live_process_made(backend: Backend) -> None:
    """A store records an environment once it is made: until then another process's reconcile
    must not take it for an orphan. Kept while its maker runs; torn down once it is gone."""
    maker = make_backend(backend.name, backend_dir(backend))  # as another process would
    env = await maker.create("env-inuse", EnvironmentSpec(resources=REDIS_ONLY))
    others = {e.id for e in await backend.list()} - {env.id}
    try:
        assert await Provisioner(backend).reconcile(known=others) == []
        assert all(h.ok for h in await backend.health(env.id))
        await maker.close()  # the maker is gone: the kernel drops its lock, as when it dies
        assert await Provisioner(backend).reconcile(known=others) == [env.id]
    finally:
        await backend.destroy(env.id)
    assert await backend.get(env.id) is None


async def test_orphans_of_a_vanished_environment_are_killed(backend: Backend) -> None:
    env = await backend.create(
        "env-orphan", EnvironmentSpec(resources=(Resource.POSTGRES, Resource.REDIS))
    )
    data_dir = backend_dir(backend)
    assert marked_pids(data_dir, env.id)
    await asyncio.to_thread(
        subprocess.run, ["rm", "-rf", str(data_dir / "envs" / env.id)], check=True
    )
    assert env.id not in {e.id for e in await backend.list()}
    for _ in range(50):
        if not marked_pids(data_dir, env.id):
            break
        await asyncio.sleep(0.05)
    assert marked_pids(data_dir, env.id) == []
    assert backend.ports.leased(env.id) == []  # type: ignore[attr-defined]
    assert containers_of(backend, env.id) == []


def _listener() -> socket.socket:
    """A foreign process holding a port (its own free choice) whose next port is free."""
    while True:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        if port_is_free(sock.getsockname()[1] + 1):
            return sock
        sock.close()


def test_port_pool_skips_ports_in_use_and_leased(tmp_path: Path) -> None:
    foreign = _listener()
    taken = foreign.getsockname()[1]
    try:
        alive = {"env-a", "env-b"}
        pool = PortPool(tmp_path, (taken, taken + 1), alive.__contains__)
        assert pool.allocate("env-a", 1) == [taken + 1]
        with pytest.raises(ProvisioningError, match="no 1 free ports"):
            pool.allocate("env-b", 1)
        alive.discard("env-a")  # its environment vanished: the lease is stale
        assert pool.allocate("env-b", 1) == [taken + 1]
        pool.release("env-b")
        assert pool.leased() == []
    finally:
        foreign.close()


async def test_a_port_taken_after_leasing_is_retried(
    backend: Backend, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A foreign process binds the leased port before our server does: create retries elsewhere."""
    foreign = _listener()
    taken = foreign.getsockname()[1]
    try:
        backend = make_backend(backend.name, data_dir / f"race-{backend.name}")
        pool = backend.ports  # type: ignore[attr-defined]
        monkeypatch.setattr("provisioning.local.ports.port_is_free", lambda port: True)
        monkeypatch.setattr(pool, "range", range(taken, taken + 2))
        monkeypatch.setattr(pool, "_candidates", lambda: [taken, taken + 1])
        env = await backend.create("env-race", EnvironmentSpec(resources=REDIS_ONLY))
        assert env.resources[Resource.REDIS].port == taken + 1
        assert pool.leased("env-race") == [taken + 1]
        await backend.destroy(env.id)
    finally:
        foreign.close()
