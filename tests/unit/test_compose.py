"""compose.yaml stays true to the code: each role runs a real `cruscible` command with options it
has, every `CRUSCIBLE_*` variable is a setting that parses, and every role shares one store."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from typer.main import get_command

from bot.cli import app
from bot.config import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"


def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_each_role_runs_a_cruscible_command_with_its_own_options() -> None:
    cli = get_command(app)
    roles = {name: s for name, s in services().items() if s.get("image") == "cruscible:local"}
    assert {s["command"][1] for s in roles.values()} == {"run", "worker"}
    for name, service in roles.items():
        program, command, *args = service["command"]
        assert program == "cruscible", name
        sub = cli.commands[command]  # type: ignore[attr-defined]
        options = {opt for p in sub.params for opt in p.opts}
        given = [a for a in args if a.startswith("--")]
        assert set(given) <= options, (name, given, options)


def test_every_setting_is_one_the_code_reads_and_parses() -> None:
    urls = set()
    for name, service in services().items():
        env = service.get("environment", {})
        ours = {k: str(v) for k, v in env.items() if k.startswith("CRUSCIBLE_")}
        if not ours:
            continue
        for key in ours:
            assert key.removeprefix("CRUSCIBLE_").lower() in Settings.model_fields, (name, key)
        plain = {
            k.removeprefix("CRUSCIBLE_").lower(): re.sub(r"\$\{[^}]*\}", "pw", v)
            for k, v in ours.items()
        }
        settings = Settings(**plain)  # the values parse as the process would read them
        assert settings.uses_job_engine, name  # PostgreSQL: the roles share one store
        urls.add(settings.db_url)
    assert len(urls) == 1


def test_the_image_makes_the_users_every_container_shares() -> None:
    """Front ends make environments and workers fault them, over one data directory: the
    servers' and the sandbox's users must have one id in every container, so the image makes
    them (each container would otherwise number them in the order it first needed them)."""
    from provisioning.local.users import SERVICE_USER
    from provisioning.sandbox.host import SANDBOX_USER

    build = yaml.safe_load(COMPOSE.read_text())["x-app"]["build"]["dockerfile_inline"]
    runs = " ".join(build.replace("\\\n", " ").split())
    for user in (SERVICE_USER, SANDBOX_USER):
        assert re.search(rf"useradd --system [^&]*\s{re.escape(user)}(\s|$)", runs), user


def test_every_role_shares_the_servers_processes_and_directories() -> None:
    """A worker faults servers a front end started (found by their marker in /proc, signalled
    by process group), and every role leases ports from one pool: the host's process
    namespace, the data directory and the servers' runtime directory are the same for all."""
    from provisioning.local.layout import RUNTIME_BASE

    roles = {name: s for name, s in services().items() if s.get("image") == "cruscible:local"}
    for name, service in roles.items():
        assert service.get("pid") == "host", name
        mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}
        env = service["environment"]
        for shared in (env["CRUSCIBLE_DATA_DIR"], str(RUNTIME_BASE)):
            assert mounts.get(shared) == shared, (name, shared)
