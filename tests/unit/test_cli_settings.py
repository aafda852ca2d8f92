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
