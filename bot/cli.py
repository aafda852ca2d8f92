"""The ``cruscible`` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

# Each command imports what it uses, when it runs: `--help`, `challenges list` and `env list`
# must answer at once, without the coach, the grader, matplotlib or the chat platforms'
# libraries (tests/unit/test_cli_imports.py keeps them out).
if TYPE_CHECKING:
    from rich.console import Console

    from bot.app import App
    from bot.config import Settings
    from bot.core.outbox import Actor
    from challenges.catalog import Catalog, Challenge
    from provisioning.manager import Provisioner

T = TypeVar("T")
app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
env_app = typer.Typer(no_args_is_help=True, help="Ephemeral infrastructure environments.")
challenges_app = typer.Typer(no_args_is_help=True, help="The challenge catalog.")
app.add_typer(env_app, name="env")
app.add_typer(challenges_app, name="challenges")

EXIT_PASSED, EXIT_FAILED, EXIT_CANNOT = 0, 1, 2
_consoles: dict[bool, Console] = {}


def console(stderr: bool = False) -> Console:
    """The terminal (stdout, or stderr for errors and progress), made on first use."""
    if stderr not in _consoles:
        from rich.console import Console

        _consoles[stderr] = Console(stderr=stderr)
    return _consoles[stderr]


def terminal() -> Actor:
    """Who types at the terminal: the operator of this machine."""
    from bot.core.outbox import Actor

    return Actor("console", "terminal", "you")


def fail(message: str, code: int = EXIT_CANNOT) -> typer.Exit:
    console(stderr=True).print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def clear_errors() -> tuple[type[Exception], ...]:
    """Refusals that end a command with one ``error:`` line and exit 2, not a traceback."""
    from bot.app import StoreUnavailable
    from bot.core.coach import CoachError
    from challenges.catalog import ChallengeError
    from challenges.launch import LaunchError
    from grading.runner import CannotGrade
    from provisioning.backend import ProvisioningError

    return (
        CoachError,
        ChallengeError,
        ProvisioningError,
        CannotGrade,
        LaunchError,
        StoreUnavailable,
        ValueError,
    )


def load_settings(*, operator: bool = True) -> Settings:
    """The ``CRUSCIBLE_*`` settings; a bad value is one clear line, before anything is touched.

    ``operator``: the command line is used by whoever operates this machine, so its
    environments count against ``CRUSCIBLE_MAX_ENVS_TOTAL`` only;
    ``CRUSCIBLE_MAX_ENVS_PER_OWNER`` limits each learner of a chat platform (``run``).
    """
    from pydantic import ValidationError

    from bot.config import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"CRUSCIBLE_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            if e["loc"]
            else e["msg"].removeprefix("Value error, ")  # a rule over several settings
            for e in exc.errors()
        )
        raise fail(f"bad setting: {problems}") from None
    if operator:
        settings.max_envs_per_owner = settings.max_envs_total
    return settings


def load_catalog() -> Catalog:
    from challenges.catalog import Catalog, ChallengeError

    try:
        return Catalog.load()
    except ChallengeError as exc:
        raise fail(str(exc)) from None


def run(
    fn: Callable[[App], Awaitable[T]],
    *,
    settings: Settings | None = None,
    catalog: Catalog | None = None,
) -> T:
    """Run ``fn`` with the app open; clear one-line errors for every refusal."""
    import asyncio

    from bot import logs
    from bot.app import open_app

    settings = settings or load_settings()
    logs.setup(settings.log_level)
    errors = clear_errors()

    async def main() -> T:
        async with open_app(settings, catalog=catalog) as application:
            return await fn(application)

    try:
        return asyncio.run(main())
    except errors as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None


def run_provisioner(fn: Callable[[Provisioner, Settings], Awaitable[T]]) -> T:
    """Run ``fn`` with only the provisioner open (no store, catalog or coach): for commands
    that look at or act on environments without recording anything."""
    import asyncio

    from bot import logs
    from bot.app import make_provisioner
    from provisioning.backend import ProvisioningError

    settings = load_settings()
    logs.setup(settings.log_level)

    async def main() -> T:
        provisioner = make_provisioner(settings)
        try:
            for env in await provisioner.list():  # as open_app does: no log line shows them
                logs.SECRETS.add(*env.secrets())
            return await fn(provisioner, settings)
        finally:
            await provisioner.close()

    try:
        return asyncio.run(main())
    except (ProvisioningError, ValueError) as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None


def parse_ttl(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return timedelta(seconds=float(text[:-1]) * units[text[-1]])
    except (KeyError, ValueError, IndexError):
        raise typer.BadParameter(f"{text!r} is not a duration like 30m or 2h") from None


def check_target(url: str, settings: Settings) -> None:
    """Refuse a URL the grader would refuse, before anything is opened."""
    import asyncio

    from bot.app import url_policy
    from grading.urlguard import TargetRefused, resolve_target

    try:
        asyncio.run(resolve_target(url, url_policy(settings)))
    except (TargetRefused, ValueError) as exc:
        raise fail(str(exc)) from None


# -- demo and chat ----------------------------------------------------------------------------
@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="seed of both grades")] = 1234,
    out_dir: Annotated[Path, typer.Option("--out", help="where reports go")] = Path("out/demo"),
) -> None:
    """The whole loop in the terminal: daily post, Start, bundle, grading, discussion, teardown."""
    settings = load_settings()
    from bot.demo import run_demo

    code = run(lambda a: run_demo(a, console(), seed=seed, out_dir=out_dir), settings=settings)
    raise typer.Exit(code)


@app.command()
def chat(name: Annotated[str, typer.Option(help="your name in the channel")] = "you") -> None:
    """An interactive console channel: type what a Discord or Slack user would."""
    import asyncio

    from bot.adapters.console import ConsoleOutbox
    from bot.core.commands import dispatch, help_message
    from bot.core.outbox import Actor

    async def loop(a: App) -> None:
        box = ConsoleOutbox(console())
        actor = Actor("console", name, name)
        await box.reply(help_message())
        while True:
            try:
                line = await asyncio.to_thread(input, f"{name}> ")
            except EOFError:
                return
            if line.strip() in {"quit", "exit"}:
                return
            if line.strip():
                await dispatch(a.coach, actor, line, box)

    run(loop)


@app.command("run")
def run_bot(
    platform: Annotated[str, typer.Option(help="discord or slack")],
    socket_mode: Annotated[bool, typer.Option(help="Slack: Socket Mode instead of HTTP")] = False,
    port: Annotated[int, typer.Option(help="Slack HTTP mode: port of /slack/events")] = 3000,
) -> None:
    """Run the coach on a chat platform (tokens from the environment)."""
    import importlib

    if platform not in {"discord", "slack"}:
        raise fail(f"unknown platform {platform!r} (discord or slack)")
    check_platform_credentials(platform, socket_mode=socket_mode)
    settings = load_settings(operator=False)
    adapter = importlib.import_module(f"bot.adapters.{platform}.main")
    run(lambda a: adapter.serve(a, socket_mode=socket_mode, port=port), settings=settings)


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="grades at once (default: CRUSCIBLE_GRADING_CONCURRENCY)"),
    ] = None,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate/--no-calibrate",
            help="first measure what this host sustains where it has not (challenges calibrate)",
        ),
    ] = False,
) -> None:
    """Provision and grade: take grading jobs from the shared PostgreSQL store.

    Any number of workers, on any host; SIGTERM gives running grades back to the queue."""
    settings = load_settings(operator=False)
    if not settings.uses_job_engine:
        raise fail(
            "a worker takes its jobs from a PostgreSQL store: set CRUSCIBLE_DATABASE_URL="
            "postgresql+psycopg://…; with the default SQLite store, `cruscible run` grades itself"
        )

    async def work(a: App) -> None:
        from bot.core.jobs import EngineQueue

        assert isinstance(a.coach.queue, EngineQueue)
        if calibrate:  # before any grade: grades running would be measured too
            await measure_host(a, list(a.catalog), console(stderr=True))
        for challenge in a.catalog:  # environments are made here: the warm pool too
            a.provisioner.warm(challenge.environment_spec("pool"))
        scales = [(c.id, a.coach.grader.scales.for_challenge(c)) for c in a.catalog]
        unmeasured = [f"{i} {s.rate:,g}/s" for i, s in scales if s.basis == "unmeasured"]
        if unmeasured:
            logging.getLogger("cruscible.worker").warning(
                "this host has not measured what it sustains (cruscible challenges calibrate); "
                "grading at the floor rate, below the stated scale: %s",
                ", ".join(unmeasured),
            )
        await a.coach.queue.work(concurrency=concurrency)

    run(work, settings=settings)


def check_platform_credentials(platform: str, *, socket_mode: bool) -> None:
    """A missing credential is one line and exit 2 before the data directory is touched (the
    adapter checks them again, and asks the platform whether it accepts them)."""
    if platform == "discord":
        if not os.environ.get("DISCORD_TOKEN", "").strip():
            raise fail("DISCORD_TOKEN is not set (the bot token from the developer portal)")
        return
    from bot.adapters.slack.config import SlackConfig

    try:
        SlackConfig.from_env(os.environ, socket_mode=socket_mode)
    except ValueError as exc:
        raise fail(str(exc)) from None


# -- grading ----------------------------------------------------------------------------------
@app.command()
def grade(
    challenge: str,
    url: str,
    env: Annotated[str | None, typer.Option(help="environment to inject faults into")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
    out_dir: Annotated[Path | None, typer.Option("--out", help="write report files here")] = None,
) -> None:
    """Grade a running service. Exit 0 passed, 1 failed, 2 could not grade."""
    from challenges.catalog import ChallengeError

    settings = load_settings()
    catalog = load_catalog()
    try:
        ch = catalog.get(challenge)
    except ChallengeError as exc:
        raise fail(str(exc)) from None
    check_target(url, settings)
    from rich.progress import Progress

    from grading.render import render_markdown
    from grading.runner import overall_progress

    err, out = console(stderr=True), console()

    async def go(a: App) -> int:
        environment = await a.provisioner.get(env) if env else None
        target_dir = out_dir or a.settings.reports_dir / f"{ch.id}-{seed}"
        with Progress(console=err, transient=True, disable=as_json or not err.is_terminal) as bar:
            task = bar.add_task(f"grading {ch.id}", total=1.0)

            def progress(phase: str, fraction: float) -> None:
                bar.update(task, completed=overall_progress(phase, fraction), description=phase)

            graded = await a.coach.grader.grade(
                ch, url, target_dir, seed=seed, env=environment, progress=progress
            )
        if as_json:
            print(graded.report.to_json())
        else:
            from rich.markdown import Markdown

            out.print(Markdown(render_markdown(graded.report)))
            out.print(f"report files: {', '.join(str(f) for f in graded.files)}")
        return EXIT_PASSED if graded.report.passed else EXIT_FAILED

    raise typer.Exit(run(go, settings=settings, catalog=catalog))


@app.command()
def submit(
    challenge: str,
    source: Annotated[
        str, typer.Argument(help="a folder, a .zip/.tar.gz archive, or a public https:// git URL")
    ],
    env: Annotated[
        str | None, typer.Option(help="run next to this environment (default: a fresh one)")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
    out_dir: Annotated[Path | None, typer.Option("--out", help="write report files here")] = None,
    keep: Annotated[
        bool, typer.Option(help="keep the service running after the grade (until Ctrl-C or TTL)")
    ] = False,
) -> None:
    """Build and run your code in a sandbox next to an environment, then grade it.

    Exit 0 passed, 1 failed, 2 could not grade (the last log lines say why).
    """
    from challenges.catalog import ChallengeError

    settings = load_settings()
    catalog = load_catalog()
    try:
        ch = catalog.get(challenge)
    except ChallengeError as exc:
        raise fail(str(exc)) from None
    import asyncio
    from datetime import UTC, datetime

    from rich.markup import escape
    from rich.progress import Progress

    from bot.app import url_policy
    from bot.core.hosted import HostedGrader
    from grading.render import render_markdown
    from grading.runner import overall_progress
    from provisioning.hosted import logs as hosted_logs
    from provisioning.hosted.submission import env_secrets

    err, out = console(stderr=True), console()

    def say(line: str) -> None:
        err.print(f"[dim]{escape(line)}[/]", highlight=False, soft_wrap=True)

    async def go(a: App) -> int:
        hosted = HostedGrader(a.coach.grader, a.settings.data_dir, url_policy(a.settings))
        scope = a.coach.owner(terminal())
        sub, built = await hosted.prepare(source, ch, scope=scope, say=say)  # before any env
        own = None
        try:
            if env:
                environment = await a.provisioner.get(env)
            else:
                spec = ch.environment_spec(scope, a.settings.env_ttl)
                environment = own = await a.coach.create_environment(terminal(), spec)
                say(f"provisioned {environment.id} for {ch.id}")
        except BaseException:
            sub.update(status="failed")
            await sub.cleanup()
            raise
        try:
            with Progress(
                console=err, transient=True, disable=as_json or not err.is_terminal
            ) as bar:
                task = bar.add_task(f"grading {ch.id}", total=1.0)

                def progress(phase: str, fraction: float) -> None:
                    bar.update(task, completed=overall_progress(phase, fraction), description=phase)

                result = await hosted.grade_prepared(
                    sub,
                    built,
                    ch,
                    environment,
                    seed=seed,
                    out_dir=out_dir,
                    keep=keep,
                    progress=progress,
                    say=say,
                )
            sub = result.submission
            for proc in sub.meta().get("processes", []):
                for i in range(proc["replicas"]):
                    text, _ = hosted_logs.read_tail(sub.kept_log(proc["name"], i), 2048)
                    tail = hosted_logs.last_lines(text, 5)
                    say(f"--- {proc['name']}[{i}], last lines ---\n{tail or '(no output)'}")
            if result.crashed:
                err.print(
                    "[yellow]stopped during the grade:[/]\n" + escape(result.crash_report),
                    highlight=False,
                )
            say(f"full logs: cruscible logs {sub.id} [--process NAME] [--replica N]")
            if as_json:
                print(result.graded.report.to_json())
            else:
                from rich.markdown import Markdown

                out.print(Markdown(render_markdown(result.graded.report)))
                out.print(f"report files: {', '.join(str(f) for f in result.graded.files)}")
            if result.service is not None:
                left = (environment.expires_at - datetime.now(UTC)).total_seconds()
                say(
                    f"{result.url} stays up until {environment.expires_at:%H:%M} UTC "
                    "(Ctrl-C to stop)"
                )
                try:
                    await asyncio.sleep(max(0.0, left))
                finally:
                    await sub.finish(result.service, env_secrets(environment))
            return EXIT_PASSED if result.graded.report.passed else EXIT_FAILED
        finally:
            if own is not None:
                await a.coach.destroy_environment(own.id)
                say(f"{own.id} destroyed")

    raise typer.Exit(run(go, settings=settings, catalog=catalog))


@app.command("logs")
def show_logs(
    submission: Annotated[str, typer.Argument(help="the submission's id (sub-…)")],
    process: Annotated[str, typer.Option(help="a process of the manifest, or build")] = "web",
    replica: Annotated[int, typer.Option(min=0)] = 0,
    follow: Annotated[bool, typer.Option(help="keep printing while it runs")] = False,
) -> None:
    """A hosted submission's build or process log (secrets masked)."""
    import asyncio
    import contextlib

    from provisioning.hosted import logs as hosted_logs
    from provisioning.hosted.submission import Submission, env_secrets

    settings = load_settings()
    try:
        sub = Submission.open(settings.data_dir, submission)
    except ValueError as exc:
        raise fail(str(exc)) from None
    meta = sub.meta()
    names = {p["name"]: p["replicas"] for p in meta.get("processes", [])}
    if process != "build" and process not in names:
        known = ", ".join(["build", *names]) or "build"
        raise fail(f"{submission} has no process {process!r} (known: {known})")
    if process != "build" and replica >= names[process]:
        raise fail(f"{process} has {names[process]} replica(s): --replica 0..{names[process] - 1}")
    name = "build" if process == "build" else f"{process}-{replica}"
    live_dir = sub.build_root if process == "build" else sub.run_root
    live = live_dir / "logs" / ("build-0.log" if process == "build" else f"{name}.log")
    kept = sub.logs_dir / f"{name}.log"

    live_states = {"fetching", "building", "built", "starting", "running", "graded"}

    async def go(p: Provisioner, _: Settings) -> None:
        from provisioning.backend import ProvisioningError

        secrets: tuple[str, ...] = ()
        with contextlib.suppress(ProvisioningError, KeyError):
            if meta.get("environment"):  # live logs are raw; kept ones were masked
                secrets = env_secrets(await p.get(meta["environment"]))
        if not (follow and sub.meta().get("status") in live_states and live.exists()):
            text, _ = hosted_logs.read_tail(kept if kept.exists() else live)
            sys.stdout.write(hosted_logs.mask(text, secrets))
            return
        offset, printed = 0, 0
        while True:
            text, offset = hosted_logs.read_tail(live, offset=offset)
            shown = hosted_logs.mask(text, secrets)
            sys.stdout.write(shown)
            sys.stdout.flush()
            printed += len(shown)
            if sub.meta().get("status") not in live_states or not live.exists():
                # It ended between two reads: the rest is in the kept (masked) copy.
                rest, _ = hosted_logs.read_tail(kept)
                if offset <= hosted_logs.KEEP_BYTES and len(rest) > printed:
                    sys.stdout.write(rest[printed:])
                return
            await asyncio.sleep(0.5)

    run_provisioner(go)


@app.command()
def load(
    url: str,
    rate: Annotated[float, typer.Option(help="requests per second")],
    duration: Annotated[float, typer.Option(help="seconds")],
    method: Annotated[str, typer.Option()] = "GET",
    body: Annotated[str | None, typer.Option(help="JSON body")] = None,
    header: Annotated[list[str] | None, typer.Option(help="'Name: value', repeatable")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Open-model load against a URL: achieved rate, errors by kind, latency percentiles."""
    import asyncio

    from bot.loadtable import format_table
    from grading.load import plan_from_cli, run_load_sync
    from grading.urlguard import TargetRefused, resolve_target

    settings = load_settings()
    from bot.app import url_policy

    try:
        if body is not None:
            try:
                json.loads(body)
            except json.JSONDecodeError as exc:
                raise ValueError(f"--body is not JSON: {exc}") from None
        target = asyncio.run(resolve_target(url, url_policy(settings)))
        plan = plan_from_cli(method, "", body, header or [], rate, duration)  # the URL itself
    except (TargetRefused, ValueError) as exc:
        raise fail(str(exc)) from None
    result = run_load_sync(target, plan)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        console().print(format_table(result))


# -- environments -----------------------------------------------------------------------------
def _env_json(env: Any, with_bundle: bool) -> dict[str, Any]:
    """``{"id", "expires_at", "backend", "resources": {kind: {"host", "port"}}, "bundle"?}``;
    an exposed resource's host and port are those learners connect to (its public listener)."""
    data: dict[str, Any] = {
        "id": env.id,
        "expires_at": env.expires_at.isoformat(),
        "backend": env.backend,
        "resources": {
            k.value: {"host": v.host, "port": v.extra.get("ports", {}).get("public", v.port)}
            for k, v in env.resources.items()
        },
    }
    if with_bundle:
        data["bundle"] = env.bundle
    return data


@env_app.command("up")
def env_up(
    challenge: Annotated[
        str | None, typer.Argument(help="provision what this challenge lists")
    ] = None,
    resources: Annotated[str | None, typer.Option(help="e.g. postgres,redis,s3,queue")] = None,
    ttl: Annotated[str, typer.Option(help="time to live, e.g. 2h")] = "2h",
    backend: Annotated[str | None, typer.Option(help="local or docker")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Provision an environment; prints its bundle (keep it private)."""
    from provisioning.backends import BACKENDS
    from provisioning.spec import EnvironmentSpec, Resource

    if (challenge is None) == (resources is None):
        raise fail("name a CHALLENGE or pass --resources, not both")
    lifetime = parse_ttl(ttl)
    if backend is not None and backend not in BACKENDS:
        raise fail(f"unknown provisioning backend {backend!r} (known: {', '.join(BACKENDS)})")
    settings = load_settings()
    if backend:
        settings.backend = backend
    catalog, kinds = None, []
    if challenge is not None:
        from challenges.catalog import ChallengeError

        catalog = load_catalog()
        try:
            catalog.get(challenge)
        except ChallengeError as exc:
            raise fail(str(exc)) from None
    else:
        try:
            kinds = Resource.parse_list(resources or "")
        except ValueError as exc:
            raise fail(str(exc)) from None
        if Resource.PROVIDER in kinds:
            raise fail("a provider comes with the challenge that defines it")
    me = terminal()

    async def go(a: App) -> None:
        owner = a.coach.owner(me)
        if challenge:
            spec = a.catalog.get(challenge).environment_spec(owner, lifetime)
        else:
            spec = EnvironmentSpec(kinds, owner=owner, ttl=lifetime)
        env = await a.coach.create_environment(me, spec)
        if as_json:
            print(json.dumps(_env_json(env, with_bundle=True), indent=2))
        else:
            console().print(f"[green]{env.id}[/] is up until {env.expires_at:%H:%M UTC}. Bundle:")
            print(env.dotenv(), end="")

    run(go, settings=settings, catalog=catalog)


@env_app.command("list")
def env_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every live environment."""

    async def go(p: Provisioner, _: Settings) -> None:
        envs = await p.list()
        if as_json:
            print(json.dumps([_env_json(e, with_bundle=False) for e in envs], indent=2))
            return
        from rich.table import Table

        table = Table("id", "owner", "challenge", "resources", "expires (UTC)")
        for e in envs:
            table.add_row(
                e.id,
                e.owner,
                e.label,
                ", ".join(r.value for r in e.resources),
                f"{e.expires_at:%Y-%m-%d %H:%M}",
            )
        console().print(table)

    run_provisioner(go)


@env_app.command("bundle")
def env_bundle(env_id: str) -> None:
    """Print an environment's .env bundle."""

    async def go(p: Provisioner, _: Settings) -> None:
        print((await p.get(env_id)).dotenv(), end="")

    run_provisioner(go)


@env_app.command("extend")
def env_extend(env_id: str) -> None:
    """Push the expiry back (up to the ceiling)."""

    async def go(p: Provisioner, settings: Settings) -> None:
        env = await p.extend(env_id, settings.env_extend_by)
        console().print(f"{env.id} now expires at {env.expires_at:%Y-%m-%d %H:%M} UTC")

    run_provisioner(go)


@env_app.command("fault")
def env_fault(env_id: str, resource: str, action: str) -> None:
    """Inject a fault: pause, resume, kill, start, restart, restart-lose-data."""
    from provisioning.faults import FaultAction
    from provisioning.spec import Resource

    try:
        kind, act = Resource(resource), FaultAction(action)
    except ValueError as exc:
        raise fail(str(exc)) from None

    async def go(p: Provisioner, _: Settings) -> None:
        rec = await p.fault(env_id, kind, act)
        console().print(
            f"{act.value} {kind.value}: took {rec.effective_at - rec.requested_at:.2f} s"
        )

    run_provisioner(go)


@env_app.command("down")
def env_down(env_id: str) -> None:
    """Destroy an environment."""

    async def go(a: App) -> None:
        await a.coach.destroy_environment(env_id)
        console().print(f"{env_id} destroyed")

    run(go)


@env_app.command("doctor")
def env_doctor(env_id: str) -> None:
    """Health of each resource, as a learner would ask."""

    async def go(p: Provisioner, _: Settings) -> int:
        checks = await p.health(env_id)
        for h in checks:
            mark = "[green]ok[/]" if h.ok else "[red]FAIL[/]"
            console().print(f"{h.resource.value:9} {mark}  {h.detail}")
        return 0 if all(h.ok for h in checks) else 1

    raise typer.Exit(run_provisioner(go))


# -- catalog ----------------------------------------------------------------------------------
@challenges_app.command("list")
def challenges_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The catalog in rotation order."""
    catalog = load_catalog()
    for problem in catalog.errors:
        console(stderr=True).print(
            f"[yellow]left out:[/] {problem}", highlight=False, soft_wrap=True
        )
    if as_json:
        rows = [
            {
                "id": c.id,
                "title": c.spec.title,
                "difficulty": c.spec.difficulty,
                "resources": [r.value for r in c.spec.resources],
                "tags": list(c.spec.tags),
            }
            for c in catalog
        ]
        print(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table("id", "title", "difficulty", "resources")
    for c in catalog:
        table.add_row(
            c.id, c.spec.title, str(c.spec.difficulty), ", ".join(r.value for r in c.spec.resources)
        )
    console().print(table)


@challenges_app.command("show")
def challenges_show(challenge: str) -> None:
    """A challenge's statement."""
    from challenges.catalog import ChallengeError

    public_host = load_settings().public_host or ""  # checked: it is shown in the statement
    try:
        ch = load_catalog().get(challenge)
    except ChallengeError as exc:
        raise fail(str(exc)) from None
    from rich.markdown import Markdown

    console().print(Markdown(f"# {ch.spec.title}\n\n" + ch.statement(public_host)))


@challenges_app.command("validate")
def challenges_validate(
    path: Annotated[
        Path | None, typer.Argument(help="a challenge folder (default: the catalog)")
    ] = None,
    grade_designs: Annotated[
        bool, typer.Option("--grade/--no-grade", help="grade the reference designs")
    ] = True,
) -> None:
    """Check challenge folders against the schema and grade their reference designs."""
    from bot.core.references import grade_references
    from challenges.catalog import Challenge

    err, out = console(stderr=True), console()

    async def go(a: App) -> int:
        if path is not None:
            targets = [Challenge.load(path)]
        else:
            for problem in a.catalog.errors:
                err.print(f"[red]invalid:[/] {problem}", highlight=False, soft_wrap=True)
            targets = list(a.catalog)
        failures = len(a.catalog.errors) if path is None else 0
        for ch in targets:
            try:
                ch.scenario()
                ch.statement()
                ch.tradeoffs()
            except Exception as exc:  # a challenge's own code: report it, check the others
                err.print(f"[red]{ch.id}:[/] {type(exc).__name__}: {exc}", highlight=False)
                failures += 1
                continue
            if len(ch.solutions) < 2:
                err.print(f"[red]{ch.id}:[/] needs at least two reference designs under solutions/")
                failures += 1
            named = ch.spec.grading.reference
            if named and named not in {s.name for s in ch.solutions}:
                err.print(
                    f"[red]{ch.id}:[/] challenge.yaml: grading.reference: no reference design "
                    f"solutions/{named}/",
                    highlight=False,
                )
                failures += 1
            out.print(f"[green]{ch.id}[/]: schema, templates and scenario load")
            if not grade_designs:
                continue
            graded = await grade_references(
                a.coach, ch, a.settings.reports_dir / f"validate-{ch.id}"
            )
            for name, g in graded.items():
                verdict = "[green]passed[/]" if g.report.passed else "[red]FAILED[/]"
                out.print(
                    f"  {name}: {g.report.score}/100 {verdict} in {g.report.duration_s:.0f} s"
                )
                failures += not g.report.passed
        return EXIT_PASSED if failures == 0 else EXIT_FAILED

    raise typer.Exit(run(go))


@challenges_app.command("baseline")
def challenges_baseline(challenge: str) -> None:
    """Grade the reference designs and store their results as the challenge's baselines."""
    from bot.core.references import grade_references, write_baselines

    async def go(a: App) -> None:
        ch = a.catalog.get(challenge)
        graded = await grade_references(a.coach, ch, a.settings.reports_dir / f"baseline-{ch.id}")
        console().print(f"wrote {write_baselines(ch, graded)}")

    run(go)


@challenges_app.command("calibrate")
def challenges_calibrate(
    challenge: Annotated[
        list[str] | None, typer.Argument(help="challenge ids (default: the whole catalog)")
    ] = None,
    again: Annotated[
        bool, typer.Option("--again", help="measure even where a measurement holds")
    ] = False,
    tries: Annotated[int, typer.Option(min=1, max=5, help="grades per rate tried")] = 2,
    steps: Annotated[int, typer.Option(min=0, max=6, help="rates tried below the stated")] = 3,
) -> None:
    """Measure the load rate this host sustains for each challenge, up to its stated scale.

    A reference design is graded on this host at the stated rate, then at rates between it
    and the challenge's floor until one is sustained; grades then run at the highest rate
    sustained (CRUSCIBLE_GRADE_RATE=measured). Run it on each worker host, with nothing else
    grading there: it takes one to a few minutes per challenge."""
    from challenges.catalog import ChallengeError

    catalog = load_catalog()
    try:
        chosen = [catalog.get(c) for c in challenge] if challenge else list(catalog)
    except ChallengeError as exc:
        raise fail(str(exc)) from None

    async def go(a: App) -> int:
        failed = await measure_host(a, chosen, console(), again=again, tries=tries, steps=steps)
        return EXIT_FAILED if failed else EXIT_PASSED

    raise typer.Exit(run(go, catalog=catalog))


async def measure_host(
    a: App,
    chosen: list[Challenge],
    out: Console,
    *,
    again: bool = False,
    tries: int = 2,
    steps: int = 3,
) -> list[str]:
    """Measure each challenge on this host where it has not been (``again``: anyway), one
    measurement at a time across the host's processes, and say what grades run at here.
    Returns the ids of the challenges that could not be measured (they grade at the floor)."""
    from bot.core.calibration import Trial, calibrate

    store = a.coach.grader.scales.calibrations
    failed: list[str] = []
    for ch in chosen:

        def said(trial: Trial, ch_id: str = ch.id) -> None:
            verdict = "sustained" if trial.sustained else f"not sustained ({trial.why})"
            out.print(f"  {ch_id} at {trial.rate:,g}/s: {verdict}", highlight=False)

        async with store.measuring():
            held = store.get(ch)
            if held is None or again:
                try:
                    await calibrate(
                        a.coach,
                        ch,
                        a.settings.reports_dir / f"calibrate-{ch.id}",
                        tries=tries,
                        steps=steps,
                        said=said,
                    )
                except Exception as exc:  # one challenge's trouble: the others still measured
                    logging.getLogger("cruscible.calibrate").exception("%s not measured", ch.id)
                    out.print(f"[red]{ch.id}:[/] not measured: {exc}", highlight=False)
                    failed.append(ch.id)
                    continue
        scale = a.coach.grader.scales.for_challenge(ch)
        kept = "" if held is None or again else f" (measured {held.measured_at}, kept)"
        out.print(
            f"[bold]{ch.id}[/]: grades here at {scale.rate:,g}/s, stated "
            f"{scale.stated_rate:,g}/s, floor {ch.spec.grading.rate:,g}/s{kept}",
            highlight=False,
        )
    return failed


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.exit(0)
