"""The `cruscible` command line: exit codes and one-line errors for bad input."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "bot"]


def cli(*args: str, data_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CRUSCIBLE_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def closed_port() -> int:
    """A loopback port with nothing listening (bound and closed: only used to be refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def garbage_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that answers every connection with junk, then closes."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = False

    def serve() -> None:
        while not stop:
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"\x00\x01garbage\r\n\r\nnot http at all")

    import threading

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop = True
    thread.join(2)
    srv.close()


def test_challenges_list_json(data_dir: Path) -> None:
    res = cli("challenges", "list", "--json", data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    assert '"id": "rate-limiter"' in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("grade", "nope", "http://127.0.0.1:1"), "unknown challenge 'nope'"),
        (("grade", "rate-limiter", "not a url"), "refused: the URL contains whitespace"),
        (("grade", "rate-limiter", "ftp://127.0.0.1/x"), "ftp"),
        (
            ("grade", "rate-limiter", "http://127.0.0.1:1", "--env", "env-nope"),
            "no environment 'env-nope'",
        ),
        (("env", "up"), "name a CHALLENGE or pass --resources"),
        (("env", "up", "--resources", "postgres,mongo"), "unknown resource 'mongo'"),
        (("env", "fault", "env-x", "redis", "explode"), "explode"),
        (("env", "down", "env-nope"), "no environment 'env-nope'"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(
    data_dir: Path, args: tuple[str, ...], message: str
) -> None:
    res = cli(*args, data_dir=data_dir)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_unreachable_url_cannot_be_graded(data_dir: Path) -> None:
    res = cli("grade", "rate-limiter", f"http://127.0.0.1:{closed_port()}", data_dir=data_dir)
    assert res.returncode == 2
    assert res.stderr.startswith("error:") and "Traceback" not in res.stderr


def test_a_service_answering_garbage_cannot_be_graded(data_dir: Path, garbage_server: int) -> None:
    res = cli("grade", "rate-limiter", f"http://127.0.0.1:{garbage_server}", data_dir=data_dir)
    assert res.returncode == 2
    assert "healthz" in res.stderr and "Traceback" not in res.stderr


async def test_grade_json_exit_1_when_the_service_breaks_the_contract(
    data_dir: Path, tmp_path: Path
) -> None:
    """/healthz fine, /v1/check nonsense: graded, failed, exit 1, report files written."""
    from aiohttp import web

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def nonsense(_: web.Request) -> web.Response:
        return web.Response(status=200, text="<html>surprise</html>")

    application = web.Application()
    application.router.add_get("/healthz", health)
    application.router.add_post("/v1/check", nonsense)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        res = await asyncio.to_thread(
            cli,
            "grade",
            "rate-limiter",
            f"http://127.0.0.1:{port}",
            "--json",
            "--out",
            str(tmp_path),
            data_dir=data_dir,
        )
    finally:
        await runner.cleanup()
    assert res.returncode == 1, res.stderr
    import json

    report = json.loads(res.stdout)
    assert report["schema"] == 1 and report["passed"] is False
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    assert statuses["contract.healthz"] == "pass"
    assert statuses["contract.allow-first"] == "fail"
    assert (tmp_path / "report.json").is_file() and (tmp_path / "report.md").is_file()


def test_validate_reports_a_broken_challenge_folder_precisely(
    data_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("statement.md.j2", "discussion.md.j2", "scenario.py"):
        (folder / name).write_text("")
    (folder / "challenge.yaml").write_text("id: broken\ntitle: T\ndifficulty: 7\n")
    res = cli("challenges", "validate", str(folder), "--no-grade", data_dir=data_dir)
    assert res.returncode == 2
    assert "challenge.yaml: difficulty: Input should be less than or equal to 5" in res.stderr
    assert "challenge.yaml: summary: Field required" in res.stderr


def test_validate_the_catalog_without_grading(data_dir: Path) -> None:
    res = cli("challenges", "validate", "--no-grade", data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    assert "rate-limiter: schema, templates and scenario load" in res.stdout


def bare_env(data_dir: Path) -> dict[str, str]:
    """The environment of a newcomer's shell: no CRUSCIBLE_, Discord or Slack variable."""
    prefixes = ("CRUSCIBLE_", "DISCORD_", "SLACK_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return {**env, "CRUSCIBLE_DATA_DIR": str(data_dir), "COLUMNS": "200"}


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        (("run", "--platform", "discord"), {}, "DISCORD_TOKEN is not set"),
        (("run", "--platform", "slack"), {}, "SLACK_BOT_TOKEN is not set"),
        (
            ("run", "--platform", "slack", "--socket-mode"),
            {"SLACK_BOT_TOKEN": "xoxb-1"},
            "SLACK_APP_TOKEN",
        ),
        (("run", "--platform", "irc"), {}, "unknown platform 'irc'"),
        (("env", "up"), {}, "name a CHALLENGE or pass --resources"),
        (("env", "up", "nope"), {}, "unknown challenge 'nope'"),
        (("env", "up", "--resources", "postgres,mongo"), {}, "unknown resource 'mongo'"),
        (("env", "up", "--resources", "queue,provider"), {}, "a provider comes with"),
        (("env", "up", "--resources", "redis", "--ttl", "soon"), {}, "'soon' is not a duration"),
        (
            ("env", "up", "--resources", "redis", "--backend", "cloud"),
            {},
            "unknown provisioning backend",
        ),
        (("env", "fault", "env-x", "redis", "explode"), {}, "explode"),
        (("grade", "nope", "http://127.0.0.1:1"), {}, "unknown challenge 'nope'"),
        (("grade", "rate-limiter", "not a url"), {}, "refused: the URL contains whitespace"),
        (("env", "list"), {"CRUSCIBLE_ENV_TTL": "forever"}, "CRUSCIBLE_ENV_TTL"),
    ],
)
def test_arguments_and_tokens_are_checked_before_anything_touches_the_disk(
    tmp_path: Path, args: tuple[str, ...], extra: dict[str, str], message: str
) -> None:
    """A missing token or a bad argument: one line, exit 2, and no data directory made."""
    fresh = tmp_path / "never made"
    res = subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env={**bare_env(fresh), **extra},
        timeout=60,
        check=False,
    )
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not fresh.exists()


def test_the_terminal_is_not_held_to_the_per_owner_limit(data_dir: Path) -> None:
    """CRUSCIBLE_MAX_ENVS_PER_OWNER limits chat learners; whoever is at the terminal operates
    the machine and is limited by CRUSCIBLE_MAX_ENVS_TOTAL only."""
    env = {**bare_env(data_dir), "CRUSCIBLE_MAX_ENVS_PER_OWNER": "1"}
    made = []
    try:
        for _ in range(2):
            res = subprocess.run(
                [*CLI, "env", "up", "--resources", "redis", "--json"],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
                check=False,
            )
            assert res.returncode == 0, res.stderr
            made.append(json.loads(res.stdout)["id"])
    finally:
        for env_id in made:
            down = subprocess.run(
                [*CLI, "env", "down", env_id], env=env, capture_output=True, timeout=120
            )
            assert down.returncode == 0, down.stderr
    assert len(set(made)) == 2


def test_load_sends_to_the_url_as_given(data_dir: Path) -> None:
    """``cruscible load http://host/healthz`` loads that path, not the path twice."""
    from tests.grading.servers import app_process

    with app_process() as url:
        res = cli(
            "load", f"{url}/healthz", "--rate", "50", "--duration", "1", "--json", data_dir=data_dir
        )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["statuses"] == {"200": 50}
