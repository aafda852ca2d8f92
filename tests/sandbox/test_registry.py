"""Which registry a build box may reach, from pip's own settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.sandbox import registry


def test_default_is_pypi_and_its_file_host() -> None:
    reg = registry.from_settings(None, [], [])
    assert reg.index_url == "https://pypi.org/simple"
    assert reg.hosts == {("pypi.org", 443), ("files.pythonhosted.org", 443)}
    assert reg.paths == ()


def test_private_index_file_index_and_find_links(tmp_path: Path) -> None:
    simple = tmp_path / "pypi" / "simple"
    simple.mkdir(parents=True)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    reg = registry.from_settings(
        "https://pkgs.example.com:8443/simple", [f"file://{simple}"], [str(wheels)]
    )
    assert reg.hosts == {("pkgs.example.com", 8443)}
    # A file index links "../../files/...": the tree above "simple" is mounted.
    assert reg.paths == (tmp_path / "pypi", wheels)
    env = reg.env("http://127.0.0.1:3128")
    assert env["PIP_INDEX_URL"] == "https://pkgs.example.com:8443/simple"
    assert env["PIP_EXTRA_INDEX_URL"] == f"file://{simple}"
    assert env["PIP_FIND_LINKS"] == str(wheels)
    assert env["HTTPS_PROXY"] == env["HTTP_PROXY"] == "http://127.0.0.1:3128"
    assert env["PIP_CONFIG_FILE"] == "/dev/null"


def test_environment_overrides_pip_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        registry,
        "_pip_config",
        lambda: {"index-url": "https://config.example.org/simple", "find-links": ""},
    )
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    assert registry.host_registry.__wrapped__().hosts == {("config.example.org", 443)}
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:3141/root/pypi/+simple/")
    assert registry.host_registry.__wrapped__().hosts == {("127.0.0.1", 3141)}
