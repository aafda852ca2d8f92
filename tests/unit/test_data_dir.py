"""Where data goes with no setting, and where servers go when their user cannot reach it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import SYSTEM_DATA_DIR, Settings, default_data_dir
from provisioning.local import layout


@pytest.fixture
def no_settings(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith("CRUSCIBLE_"):
            monkeypatch.delenv(key)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    return monkeypatch


def test_root_uses_the_system_location(no_settings: pytest.MonkeyPatch) -> None:
    assert default_data_dir(euid=0) == SYSTEM_DATA_DIR == Path("/var/lib/cruscible")


def test_a_user_follows_xdg(no_settings: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_settings.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir(euid=1000) == tmp_path / "home/.local/share/cruscible"
    no_settings.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir(euid=1000) == tmp_path / "xdg/cruscible"
    no_settings.setenv("XDG_DATA_HOME", "relative/ignored")  # the spec says: ignore it
    assert default_data_dir(euid=1000) == tmp_path / "home/.local/share/cruscible"


@pytest.mark.parametrize("home", [None, ""])
def test_home_unset_or_empty_falls_back_to_the_password_database(
    no_settings: pytest.MonkeyPatch, home: str | None
) -> None:
    if home is None:
        no_settings.delenv("HOME", raising=False)
    else:
        no_settings.setenv("HOME", home)
    expected = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".local/share/cruscible"
    assert default_data_dir(euid=1000) == expected
    assert Settings().data_dir == default_data_dir()  # and the settings never crash


def test_an_explicit_setting_wins(no_settings: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_settings.setenv("CRUSCIBLE_DATA_DIR", str(tmp_path / "with space"))
    assert Settings().data_dir == tmp_path / "with space"
    no_settings.setenv("HOME", str(tmp_path))
    no_settings.setenv("CRUSCIBLE_DATA_DIR", "~/cruscible")  # unexpanded, as a unit file has it
    assert Settings().data_dir == tmp_path / "cruscible"


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can search (pytest's own temporary root is private)."""
    path = Path(tempfile.mkdtemp(prefix="cruscible-unit-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def nobody() -> pwd.struct_passwd:
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' account to check reachability for")
    if user.pw_uid == os.getuid():
        pytest.skip("running as 'nobody'")
    return user


def test_a_private_directory_blocks_another_user(open_dir: Path, nobody: pwd.struct_passwd) -> None:
    private = open_dir / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    blocked = layout.blocking_dir(private / "data" / "envs", nobody)
    assert blocked == private
    private.chmod(0o711)  # search without read is enough to pass through
    assert layout.blocking_dir(private / "data" / "envs", nobody) is None


def test_servers_move_to_a_traversable_runtime_dir(
    open_dir: Path, nobody: pwd.struct_passwd
) -> None:
    tmp_path = open_dir
    home = tmp_path / "root home"
    (home / "data").mkdir(parents=True)
    home.chmod(0o700)
    base = tmp_path / "var-lib-cruscible-runtime"

    # Reachable: used as it is.
    assert layout.server_dir(tmp_path, nobody, base) == tmp_path.resolve()
    # Not reachable: a runtime directory, the same one every time, recording its origin.
    chosen = layout.server_dir(home / "data", nobody, base)
    assert chosen == layout.runtime_path(home / "data", base) and chosen.parent == base
    assert layout.server_dir(home / "data", nobody, base) == chosen
    assert (chosen / "origin").read_text().strip() == str((home / "data").resolve())
    assert (chosen / "origin").stat().st_mode & 0o777 == 0o600
    for folder in (base, chosen):
        assert folder.stat().st_mode & 0o777 == layout.TRAVERSABLE
    assert layout.blocking_dir(chosen / "envs", nobody) is None
    assert home.stat().st_mode & 0o777 == 0o700  # the user's own directory is left alone
    # Another data directory gets another runtime directory.
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    other.chmod(0o700)
    assert layout.server_dir(other / "x", nobody, base) not in (chosen, None)
    # Servers running as ourselves reach what we reach.
    assert layout.server_dir(home / "data", None, base) == (home / "data").resolve()


def test_traversable_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        made = layout.make_traversable(tmp_path / "a")
    finally:
        os.umask(old)
    assert made.stat().st_mode & 0o777 == 0o711


def test_staged_binaries_are_copied_once_then_reused(open_dir: Path) -> None:
    """A project the service user cannot enter gets its server binaries staged; a later process
    finds the complete copy by its stamp and does not walk the trees again."""
    from provisioning.local import binaries

    into = open_dir / "staged"
    saved = dict(binaries._staged)  # what this test process staged for its servers
    binaries._staged.clear()
    try:
        binaries.stage_for(lambda _: False, into)
        postgres = binaries.postgres_bin_dir() / "postgres"
        assert postgres.is_relative_to(into) and os.access(postgres, os.X_OK)
        stamps = sorted(into.rglob(binaries.STAGED))
        assert stamps and all(s.read_text().strip() for s in stamps)
        before = {s: s.stat().st_mtime_ns for s in stamps}
        binaries._staged.clear()  # as a new process
        binaries.stage_for(lambda _: False, into)
        assert {s: s.stat().st_mtime_ns for s in stamps} == before  # not copied again
        (stamps[0]).write_text("an earlier install\n")
        binaries._staged.clear()
        binaries.stage_for(lambda _: False, into)
        assert stamps[0].read_text() != "an earlier install\n"  # copied afresh
        assert os.access(binaries.postgres_bin_dir() / "postgres", os.X_OK)
    finally:
        binaries._staged.clear()
        binaries._staged.update(saved)


def test_processes_staging_at_once_take_turns(open_dir: Path) -> None:
    """Replicas and workers of one installation start together: each of four processes stages
    the same trees into one folder at the same moment, and all of them succeed."""
    into = open_dir / "staged-at-once"
    stage = (
        "import sys; from provisioning.local import binaries; "
        "binaries.stage_for(lambda _: False, __import__('pathlib').Path(sys.argv[1])); "
        "print(binaries.postgres_bin_dir())"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", stage, str(into)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-500:] for _, err in results]
    dirs = {Path(out.strip()) for out, _ in results}
    (postgres_bin,) = dirs
    assert postgres_bin.is_relative_to(into) and os.access(postgres_bin / "postgres", os.X_OK)
