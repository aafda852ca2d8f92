"""The command line's reading of the settings: the operator's limits, bad values."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from bot.cli import load_settings


def test_the_terminal_is_held_to_the_total_limit_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRUSCIBLE_MAX_ENVS_PER_OWNER", "2")
    monkeypatch.setenv("CRUSCIBLE_MAX_ENVS_TOTAL", "7")
    operator = load_settings()
    assert (operator.max_envs_per_owner, operator.max_envs_total) == (7, 7)
    chat = load_settings(operator=False)  # `cruscible run`: each chat learner has the limit
    assert (chat.max_envs_per_owner, chat.max_envs_total) == (2, 7)


def test_a_bad_setting_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CRUSCIBLE_MAX_ENVS_TOTAL", "lots")
    with pytest.raises(typer.Exit) as exited:
        load_settings()
    assert exited.value.exit_code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad setting: CRUSCIBLE_MAX_ENVS_TOTAL") and err.count("\n") <= 2


@pytest.mark.parametrize(
    "host", ["not a host!", "https://learners.example", "127.0.0.2:5432", "::1", "0.0.0.0"]
)
def test_a_public_host_clients_cannot_name_is_a_bad_setting(
    host: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bundles and certificates are made from it: garbage is refused before anything runs."""
    monkeypatch.setenv("CRUSCIBLE_PUBLIC_HOST", host)
    with pytest.raises(typer.Exit) as exited:
        load_settings()
    assert exited.value.exit_code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad setting: CRUSCIBLE_PUBLIC_HOST") and repr(host) in err


@pytest.mark.parametrize("host", ["learners.example.com", "127.0.0.2", "xn--n3h.example", " "])
def test_a_public_host_clients_can_name_is_kept(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRUSCIBLE_PUBLIC_HOST", host)
    assert load_settings().public_host == (host.strip() or None)


def test_a_worker_whose_store_refuses_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A PostgreSQL that is down (a loopback port bound but not listening) is an error line
    naming the store without its password, not a traceback."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # held, never listening: connections are refused
        port = closed.getsockname()[1]
        env = {
            **os.environ,
            "CRUSCIBLE_DATA_DIR": str(tmp_path),
            "CRUSCIBLE_DATABASE_URL": f"postgresql+psycopg://app:hush-123@127.0.0.1:{port}/db",
        }
        done = subprocess.run(
            [sys.executable, "-c", "from bot.cli import main; main()", "worker"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("error: cannot open the store postgresql+psycopg://app:***@")
    assert done.stderr.count("\n") <= 2 and "Traceback" not in done.stderr
    assert "hush-123" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"CRUSCIBLE_GRADING_CONCURRENCY": "0"}, "CRUSCIBLE_GRADING_CONCURRENCY"),
        ({"CRUSCIBLE_GRADING_MAX_ATTEMPTS": "0"}, "CRUSCIBLE_GRADING_MAX_ATTEMPTS"),
        ({"CRUSCIBLE_QUEUE_LIMIT": "-1"}, "CRUSCIBLE_QUEUE_LIMIT"),
        ({"CRUSCIBLE_WORKER_HEARTBEAT": "PT0S"}, "CRUSCIBLE_WORKER_HEARTBEAT"),
        (
            {"CRUSCIBLE_WORKER_HEARTBEAT": "PT30S", "CRUSCIBLE_WORKER_STALLED_AFTER": "PT5S"},
            "CRUSCIBLE_WORKER_STALLED_AFTER (0:00:05) must be at least two",
        ),
    ],
)
def test_worker_settings_that_cannot_work_are_bad_settings(
    given: dict[str, str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No grade slot, no start, a heartbeat without a pause, or live workers taken for dead."""
    for key, value in given.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(typer.Exit) as exited:
        load_settings(operator=False)
    assert exited.value.exit_code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: bad setting: {named}"), err


def test_the_scale_tests_worker_timings_stay_good(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRUSCIBLE_WORKER_HEARTBEAT", "PT0.5S")
    monkeypatch.setenv("CRUSCIBLE_WORKER_STALLED_AFTER", "PT4S")
    settings = load_settings(operator=False)
    assert settings.worker_stalled_after.total_seconds() == 4.0


@pytest.mark.parametrize("given", ["0", "-2"])
def test_worker_concurrency_below_one_is_a_usage_error(given: str) -> None:
    """Before: 0 fell back to the default unsaid, -2 ended in asyncio's Semaphore error."""
    from typer.testing import CliRunner

    from bot.cli import app

    done = CliRunner().invoke(app, ["worker", "--concurrency", given])
    assert done.exit_code == 2
    said = " ".join(done.output.replace("│", " ").split())  # unwrapped from rich's box
    assert "'--concurrency': Input should be greater than or equal to 1" in said, said


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("foo://bar", "'foo' is not a store"),
        ("not a url", "not a database URL"),
        ("postgres://app:pw@127.0.0.1:5432/db", "'postgres' is not a store"),  # SQLAlchemy 2
    ],
)
def test_a_database_url_that_is_no_store_is_a_bad_setting(
    url: str, said: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CRUSCIBLE_DATABASE_URL", url)
    with pytest.raises(typer.Exit) as exited:
        load_settings()
    assert exited.value.exit_code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad setting: CRUSCIBLE_DATABASE_URL") and said in err
    assert "pw@" not in err


async def test_an_sqlite_store_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    from bot.app import StoreUnavailable, open_store
    from bot.config import Settings

    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the store's folder should be
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{blocked}/x/c.db")
    with pytest.raises(StoreUnavailable, match="cannot open the store sqlite"):
        await open_store(settings)


def test_a_listen_host_that_is_no_ip_address_is_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CRUSCIBLE_LISTEN_HOST", "not an address")
    with pytest.raises(typer.Exit):
        load_settings()
    assert capsys.readouterr().err.startswith("error: bad setting: CRUSCIBLE_LISTEN_HOST")
    monkeypatch.setenv("CRUSCIBLE_LISTEN_HOST", "127.0.0.2")
    assert load_settings().listen_host == "127.0.0.2"


def test_a_statement_is_not_shown_with_a_public_host_clients_cannot_name(tmp_path: Path) -> None:
    """`challenges show` prints the public host in the statement: it checks it first."""
    env = {
        **os.environ,
        "CRUSCIBLE_DATA_DIR": str(tmp_path),
        "CRUSCIBLE_PUBLIC_HOST": "evil`<@everyone>",
    }
    argv = [sys.executable, "-c", "from bot.cli import main; main()", "challenges", "show"]
    done = subprocess.run(
        [*argv, "rate-limiter"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: bad setting: CRUSCIBLE_PUBLIC_HOST")
    assert "everyone" not in done.stdout
