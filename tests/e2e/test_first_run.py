"""First run on any machine: with no setting at all, from a private home, without HOME, with a
space in the data directory's path, and as an ordinary user — environments come up and go."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning.local import layout
from tests.e2e.newcomer import (
    assert_nothing_left,
    cli_for,
    private_home,
    shell,
    up_doctor_down,
)

pytestmark = pytest.mark.slow
ROOT = os.geteuid() == 0
NEWCOMER = "cruscible-newcomer"


def test_a_data_dir_with_a_space_under_a_private_home() -> None:
    """As root, the servers' user cannot enter the home: the servers go to a runtime directory
    it can reach, and the home keeps its mode."""
    home = private_home()
    data = home / "my cruscible data"
    try:
        env_id, _ = up_doctor_down(shell({"HOME": str(home), "CRUSCIBLE_DATA_DIR": str(data)}))
        assert_nothing_left(env_id, data, root=ROOT)
        assert home.stat().st_mode & 0o777 == 0o700
        assert data.stat().st_mode & 0o777 == 0o700  # the store and reports stay private
    finally:
        if ROOT:  # the runtime directory this data directory got, template included
            shutil.rmtree(layout.runtime_path(data / "environments"), ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def test_without_home_and_without_any_setting(tmp_path: Path) -> None:
    """HOME unset: root uses /var/lib/cruscible, a user the password database's home. Only the
    environment made here is destroyed (a bot may use the same default directory)."""
    env_id, data = up_doctor_down(shell({"HOME": None}), cwd=tmp_path)
    assert_nothing_left(env_id, data, root=ROOT)
    if ROOT:
        assert data == Path("/var/lib/cruscible")


@pytest.fixture
def ordinary_user() -> Iterator[pwd.struct_passwd]:
    """An unprivileged login user (made here if missing, removed if made here)."""
    if not ROOT:
        pytest.skip("making and becoming another user needs root (this run is that user already)")
    if cli_for(pwd.getpwnam("nobody")) is None:
        pytest.skip(
            "the project, or any interpreter of its version, lives where other users cannot enter"
        )
    made = False
    try:
        user = pwd.getpwnam(NEWCOMER)
    except KeyError:
        subprocess.run(
            ["useradd", "--no-create-home", "--shell", "/bin/sh", NEWCOMER],
            check=True,
            capture_output=True,
        )
        user, made = pwd.getpwnam(NEWCOMER), True
    yield user
    if made:
        subprocess.run(["userdel", NEWCOMER], check=False, capture_output=True)


def test_an_ordinary_user_with_a_private_home(ordinary_user: pwd.struct_passwd) -> None:
    """Servers run as that user, in ~/.local/share/cruscible; nothing needs root."""
    home = private_home(ordinary_user.pw_uid, ordinary_user.pw_gid)
    try:
        argv = cli_for(ordinary_user)
        assert argv is not None
        env = shell({"HOME": str(home), "USER": NEWCOMER, "LOGNAME": NEWCOMER})
        env_id, _ = up_doctor_down(
            env,
            argv=argv,
            cwd=home,
            user=ordinary_user.pw_uid,
            group=ordinary_user.pw_gid,
            extra_groups=[],
        )
        data = home / ".local" / "share" / "cruscible"
        assert data.is_dir() and data.stat().st_uid == ordinary_user.pw_uid
        assert_nothing_left(env_id, data, root=False)
    finally:
        shutil.rmtree(home, ignore_errors=True)
