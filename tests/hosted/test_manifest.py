"""cruscible.toml: each field's errors, the defaults without a manifest, and what is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.hosted.manifest import ManifestError, load_manifest, parse_manifest

GOOD = """
[build]
python = "requirements.txt"

[processes.web]
command = "python main.py"
replicas = 2

[processes.worker]
command = "python worker.py"
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "requirements.txt").write_text("aiohttp\n")
    (tmp_path / "main.py").write_text("print('hi')\n")
    return tmp_path


def test_a_full_manifest_is_read(repo: Path) -> None:
    m = parse_manifest(GOOD, repo)
    assert (m.build_kind, m.build_file) == ("python", "requirements.txt")
    assert [(p.name, p.command, p.replicas) for p in m.processes] == [
        ("web", "python main.py", 2),
        ("worker", "python worker.py", 1),
    ]
    assert m.web.name == "web" and m.from_file


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[processes.web]\ncommand = 'x'\nreplicas = 5\n",
            "processes.web.replicas: must be between 1 and 4",
        ),
        (
            "[processes.web]\ncommand = 'x'\nreplicas = 0\n",
            "processes.web.replicas: must be between 1 and 4",
        ),
        ("[processes.web]\ncommand = 'x'\nreplicas = 'two'\n", "processes.web.replicas:"),
        ("[processes.web]\nreplicas = 1\n", "processes.web.command: required"),
        ("[processes.web]\ncommand = ''\n", "processes.web.command:"),
        ("[processes.web]\ncommand = 'x'\nport = 80\n", "processes.web.port: unknown key"),
        ("[processes.Web]\ncommand = 'x'\n", "processes.Web: a name is a lower-case letter"),
        ("[processes.worker]\ncommand = 'x'\n", "processes.web: required (exactly one web process"),
        ("[build]\npython = 'requirements.txt'\n", "processes: "),
        ("[build]\nruby = 'Gemfile'\n[processes.web]\ncommand = 'x'\n", "build.ruby: unknown key"),
        ("[deploy]\nx = 1\n[processes.web]\ncommand = 'x'\n", "deploy: unknown key"),
        (
            "[build]\npython = 'reqs.txt'\n[processes.web]\ncommand = 'x'\n",
            "build.python: reqs.txt is not a file",
        ),
        (
            "[build]\npython = '../requirements.txt'\n[processes.web]\ncommand = 'x'\n",
            "build.python: '../requirements.txt' must be a path inside",
        ),
        (
            "[build]\npython = 'main.py'\n[processes.web]\ncommand = 'x'\n",
            "build.python: main.py is neither",
        ),
        (
            "[build]\npython = 'requirements.txt'\ndockerfile = 'main.py'\n[processes.web]\ncommand = 'x'\n",
            "build: choose python or dockerfile",
        ),
        ("[processes.web\ncommand = 'x'\n", "cruscible.toml: not valid TOML"),
    ],
)
def test_each_malformed_field_is_named(repo: Path, text: str, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, repo)
    assert str(info.value).startswith("cruscible.toml: "), info.value
    assert message in str(info.value), info.value


def test_without_a_manifest_main_py_runs_as_web(repo: Path) -> None:
    m = load_manifest(repo)
    assert not m.from_file
    assert [(p.name, p.command, p.replicas) for p in m.processes] == [("web", "python main.py", 1)]
    assert (m.build_kind, m.build_file) == ("python", "requirements.txt")


def test_without_a_manifest_or_main_py_says_what_was_expected(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("")
    with pytest.raises(ManifestError, match=r"expected a cruscible.toml .* or a main.py"):
        load_manifest(tmp_path)


def test_a_manifest_file_is_preferred_and_build_is_detected(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\nversion='0'\n")
    (tmp_path / "cruscible.toml").write_text("[processes.web]\ncommand = 'python -m app'\n")
    m = load_manifest(tmp_path)
    assert (m.build_kind, m.build_file) == ("python", "pyproject.toml")
    assert m.web.command == "python -m app"


def test_every_challenge_gets_the_hosted_caps_and_may_set_its_own() -> None:
    from pydantic import ValidationError

    from challenges.catalog import Catalog
    from challenges.schema import HostedCaps

    for challenge in Catalog.load():
        limits = challenge.spec.hosted.limits()
        assert (limits.cpus, limits.memory_mb, limits.pids, limits.disk_mb) == (1.5, 512, 256, 512)
    own = HostedCaps.model_validate({"memory_mb": 1024, "cpus": 2})
    assert own.limits().memory_mb == 1024 and own.limits().pids == 256
    for bad in ({"memory_mb": 8}, {"cpus": 0}, {"swap": 1}):
        with pytest.raises(ValidationError):
            HostedCaps.model_validate(bad)
