"""Time-to-bundle and memory of local environments; prints figures.

    python benchmarks/provisioning.py [--runs 20] [--idle 3]

Each run creates a fresh 4-resource environment (new processes, new data) and
destroys it; the PostgreSQL template is made before timing starts. Memory is
the PSS (from /proc/<pid>/smaps_rollup) of every process of an idle environment.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# This file's own name would shadow the ``provisioning`` package when run as a script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from provisioning.local import LocalBackend, processes  # noqa: E402
from provisioning.spec import EnvironmentSpec, Resource  # noqa: E402

SPEC = EnvironmentSpec(resources=tuple(Resource))


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


async def main(runs: int, idle: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="cruscible-bench-", dir="/tmp"))
    data_dir.chmod(0o711)
    backend = LocalBackend(data_dir)
    try:
        started = time.perf_counter()
        await backend.create("env-warmup", SPEC)
        print(
            f"first environment (incl. PostgreSQL template): {time.perf_counter() - started:.2f} s"
        )
        await backend.destroy("env-warmup")

        times = []
        for i in range(runs):
            started = time.perf_counter()
            env = await backend.create(f"env-b{i:04d}", SPEC)
            times.append(time.perf_counter() - started)
            await backend.destroy(env.id)
        print(f"time-to-bundle, {runs} creations of postgres+redis+s3+queue:")
        print(
            f"  p50 {statistics.median(times):.3f} s   p95 {percentile(times, 0.95):.3f} s   max {max(times):.3f} s"
        )

        envs = [await backend.create(f"env-idle{i}", SPEC) for i in range(idle)]
        await asyncio.sleep(3)
        marked = processes.scan(backend.data_dir)
        print(f"PSS per idle environment ({idle} environments, after 3 s idle):")
        for env in envs:
            mine = [m for m in marked if m.env_id == env.id]
            by_kind = {
                k.value: sum(pss_kib(m.pid) for m in mine if m.resource == k.value)
                for k in Resource
            }
            total = sum(by_kind.values())
            parts = "  ".join(f"{k} {v / 1024:.1f}" for k, v in by_kind.items())
            print(f"  {env.id}: {total / 1024:.1f} MiB  ({parts} MiB)")
        for env in envs:
            await backend.destroy(env.id)
    finally:
        await backend.close()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--idle", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.idle))
