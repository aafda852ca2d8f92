"""Start-up time of the command line, next to a bare interpreter.

    python benchmarks/cli.py [--runs 9] [--data-dir DIR]

Runs ``python -c pass``, ``cruscible --help``, ``cruscible challenges list`` and
``cruscible env list`` (each ``--runs`` times, interleaved, after one unmeasured warm-up run
that fills the OS file cache and creates the data directory) and prints, side by side, the
median and the fastest wall-clock time of each in milliseconds, and the median's difference
from ``python -c pass``: what the command itself costs before it answers. The goal is a
difference under 300 ms. ``env list`` uses a fresh temporary data directory unless
``--data-dir`` is given, so it reads no real environments.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE = "python -c pass"
COMMANDS: dict[str, list[str]] = {
    BASELINE: [sys.executable, "-c", "pass"],
    "cruscible --help": ["--help"],
    "cruscible challenges list": ["challenges", "list"],
    "cruscible env list": ["env", "list"],
}


def cruscible() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m bot``."""
    script = Path(sys.executable).parent / "cruscible"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "bot"]


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds user+system) of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False, timeout=60)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def measure(runs: int, data_dir: Path) -> dict[str, list[tuple[float, float]]]:
    env = {**os.environ, "CRUSCIBLE_DATA_DIR": str(data_dir), "COLUMNS": "120"}
    argvs = {
        name: argv if name == BASELINE else [*cruscible(), *argv] for name, argv in COMMANDS.items()
    }
    for argv in argvs.values():  # warm-up: file cache, data directory, staged binaries
        run_once(argv, env)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in argvs}
    for _ in range(runs):  # interleaved, so that a busy moment hits every command alike
        for name, argv in argvs.items():
            times[name].append(run_once(argv, env))
    return times


def report(times: dict[str, list[tuple[float, float]]]) -> str:
    """Wall-clock median and fastest, the median's excess over python, and the median CPU
    time (user+system: less sensitive than wall-clock time to other work on the machine)."""
    base = statistics.median(w for w, _ in times[BASELINE])
    base_cpu = statistics.median(c for _, c in times[BASELINE])
    rows = [
        f"{'command':28} {'median ms':>10} {'fastest ms':>11} {'over python':>12} "
        f"{'cpu ms':>8} {'cpu over':>9}"
    ]
    for name, samples in times.items():
        wall = [w for w, _ in samples]
        cpu = statistics.median(c for _, c in samples)
        median = statistics.median(wall)
        over = "" if name == BASELINE else f"{(median - base) * 1000:+.0f}"
        cpu_over = "" if name == BASELINE else f"{(cpu - base_cpu) * 1000:+.0f}"
        rows.append(
            f"{name:28} {median * 1000:10.0f} {min(wall) * 1000:11.0f} {over:>12} "
            f"{cpu * 1000:8.0f} {cpu_over:>9}"
        )
    load = os.getloadavg()[0]
    rows.append(f"({len(times[BASELINE])} runs each; load average {load:.1f}; goal: under +300 ms)")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--data-dir", type=Path, help="default: a fresh temporary directory")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="cruscible-bench-cli-"))
    if args.data_dir is None:
        data_dir.chmod(0o755)  # as root, the servers' user must reach it
    try:
        print(report(measure(max(1, args.runs), data_dir)))
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
