"""The command line's reading of the settings: the operator's limits, bad values."""

from __future__ import annotations

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
