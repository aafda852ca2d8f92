"""Hosted submissions: the sandbox (bubblewrap installed when missing and root), a grader of
code on the session's app, environments for the end-to-end grades, learner repositories."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.app import App, url_policy
from bot.core.hosted import HostedGrader, package_reference
from bot.core.outbox import Actor
from provisioning import Environment
from tests.support.sandbox import ensure_bubblewrap


@pytest.fixture(scope="session")
def sandbox() -> None:
    """Boxes can run here (bubblewrap is installed when missing and we are root), else skip
    with the reason."""
    reason = ensure_bubblewrap()
    if reason:
        pytest.skip(f"sandboxes cannot run here: {reason}")


TERMINAL = "console:terminal"  # the owner `cruscible submit` builds for: the cache's scope


@pytest.fixture(scope="session")
def tmpdir_root() -> Iterator[Path]:
    """A short, world-searchable TMPDIR of this session's own: its ``cruscible-hosted`` is the
    work root (and build cache) of the grader below and of ``cruscible submit`` run with it."""
    path = Path(tempfile.mkdtemp(prefix="ch-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def work_root(tmpdir_root: Path) -> Path:
    return tmpdir_root / "cruscible-hosted"


@pytest.fixture(scope="session")
def hosted(app: App, sandbox: None, work_root: Path) -> HostedGrader:
    return HostedGrader(
        app.coach.grader,
        app.settings.data_dir,
        url_policy(app.settings),
        work_root=work_root,
        allow_local_git=True,
    )


async def _env(app: App, challenge: str, who: str) -> Environment:
    actor = Actor("console", who, who)
    spec = app.catalog.get(challenge).environment_spec(app.coach.owner(actor))
    return await app.coach.create_environment(actor, spec)


@pytest.fixture(scope="session")
async def rate_env(app: App, sandbox: None) -> AsyncIterator[Environment]:
    env = await _env(app, "rate-limiter", "hosted-rl")
    yield env
    await app.coach.destroy_environment(env.id)


@pytest.fixture(scope="session")
async def notify_env(app: App, sandbox: None) -> AsyncIterator[Environment]:
    env = await _env(app, "notification-service", "hosted-ns")
    yield env
    await app.coach.destroy_environment(env.id)


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hosted"


@pytest.fixture(scope="session")
def redis_lua_repo(app: App, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rate-limiter's redis_lua reference design as a learner's repository (offline wheels)."""
    dest = tmp_path_factory.mktemp("redis-lua-repo")
    return package_reference(app.catalog.get("rate-limiter"), "redis_lua", dest)


def add_fixture(repo: Path, name: str, manifest: str) -> Path:
    """Copy ``tests/fixtures/hosted/<name>`` into ``repo`` and replace its manifest."""
    shutil.copy(FIXTURES / name, repo / name)
    (repo / "cruscible.toml").write_text(manifest)
    return repo
