"""Loads challenge folders, validates them, and gives the bot what it needs of each."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import yaml
from pydantic import ValidationError

from challenges.checks import (
    DeclarationError,
    declared_checks,
    mismatches,
    on_standard_phases,
    standard_mismatches,
)
from challenges.schema import ChallengeSpec
from grading.config import GradeConfig
from grading.report import LoadScale, Report
from provisioning import EnvironmentSpec, Resource
from provisioning.tls import ENV_PUBLIC_HOST

if TYPE_CHECKING:  # the grading engine (HTTP client and all) loads when a scenario is asked for
    from grading.scenario import Scenario

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent
REQUIRED_FILES = ("challenge.yaml", "statement.md.j2", "discussion.md.j2", "scenario.py")


def _has_spec(folder: Path) -> bool:
    """Whether ``folder`` holds a ``challenge.yaml``; folders we may not enter (a
    ``__pycache__`` another user made private) hold none."""
    if folder.name.startswith(("_", ".")):
        return False
    try:
        return (folder / "challenge.yaml").is_file()
    except PermissionError:
        return False


class ChallengeError(ValueError):
    """A challenge folder that cannot be used, with the file, field and reason."""


def _format_validation(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{path}: {where}: {err['msg']}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Solution:
    name: str
    module: str
    summary: str


def remote_note(public_host: str) -> str:
    """Three lines on using an environment exposed on ``public_host`` (empty when not exposed)."""
    if not public_host:
        return ""
    return (
        f"**From anywhere:** your environment listens on `{public_host}`, TLS only. Save "
        "`CA_CERT_PEM` as `cruscible-ca.pem` (`CA_CERT_FILE`), then load the bundle into your "
        "environment:\n"
        '`psql "$DATABASE_URL"` and psycopg read `PGSSLROOTCERT`; the AWS CLI and boto3 read '
        '`AWS_CA_BUNDLE`; `redis-cli --tls --cacert cruscible-ca.pem -u "$REDIS_URL"`;\n'
        "redis-py takes `ssl_ca_certs=`, nats-py `tls=ssl.create_default_context(cafile=...)` "
        "for `NATS_URL` (`tls://`); `PROVIDER_URL` is HTTPS under the same CA."
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (the YAML spec requires
    unique keys: https://yaml.org/spec/1.2.2/#mapping; PyYAML keeps the last one silently, so a
    repeated scoring weight or parameter would change a challenge unseen)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[object, object]:
        if isinstance(node, yaml.MappingNode):
            seen: set[object] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
                try:
                    repeated = key in seen
                except TypeError:  # unhashable: the safe loader's own check refuses it
                    continue
                if repeated:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


def _yaml_reason(exc: yaml.YAMLError) -> str:
    """PyYAML's error on one line: its problem and where (``line L, column C``)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if not problem:
        return " ".join(str(exc).split())
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


class Challenge:
    def __init__(self, path: Path, spec: ChallengeSpec) -> None:
        self.path = path
        self.spec = spec
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(path),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    @classmethod
    def load(cls, path: Path) -> Challenge:
        path = path.resolve()
        missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
        if missing:
            raise ChallengeError(f"{path}: missing {', '.join(missing)}")
        yaml_path = path / "challenge.yaml"
        try:
            data = yaml.load(yaml_path.read_text(), Loader=_UniqueKeyLoader)
        except yaml.YAMLError as exc:
            raise ChallengeError(f"{yaml_path}: not valid YAML: {_yaml_reason(exc)}") from None
        if not isinstance(data, dict):
            raise ChallengeError(f"{yaml_path}: (top level): expected a mapping")
        try:
            spec = ChallengeSpec.model_validate(data)
        except ValidationError as exc:
            raise ChallengeError(_format_validation(yaml_path, exc)) from None
        if spec.id != path.name:
            raise ChallengeError(f"{yaml_path}: id: {spec.id!r} differs from the folder name")
        if Resource.PROVIDER in spec.resources and not (path / "provider.py").is_file():
            raise ChallengeError(
                f"{yaml_path}: resources: 'provider' is listed but provider.py is missing"
            )
        try:
            checks = declared_checks(path / "scenario.py")
        except DeclarationError as exc:
            raise ChallengeError(str(exc)) from None
        problems = mismatches(yaml_path, spec.scoring, checks)
        if on_standard_phases(path / "scenario.py"):
            problems += standard_mismatches(
                path / "scenario.py", checks, list(spec.thresholds), bool(spec.grading.faults)
            )
        if problems:
            raise ChallengeError("\n".join(problems))
        return cls(path, spec)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def import_root(self) -> Path:
        """The folder from which :attr:`module` imports (for ``python -m``)."""
        return ROOT.parent if self.path.parent == ROOT else self.path.parent

    @property
    def module(self) -> str:
        """Dotted module prefix of this folder (folder names may hold hyphens)."""
        return f"challenges.{self.path.name}" if self.path.parent == ROOT else self.path.name

    def environment_spec(self, owner: str, ttl: timedelta = timedelta(hours=2)) -> EnvironmentSpec:
        """What to provision for this challenge: its resources, parameters and provider."""
        provider = Resource.PROVIDER in self.spec.resources
        return EnvironmentSpec(
            resources=self.spec.resources,
            owner=owner,
            ttl=ttl,
            parameters=dict(self.spec.parameters),
            label=self.id,
            provider_module=f"{self.module}.provider" if provider else "",
        )

    def at_rate(self, rate: float) -> Challenge:
        """This challenge with its load at ``rate`` requests/s: its scenario, grade config and
        discussion all see the rate (``grading.rate``)."""
        if rate == self.spec.grading.rate:
            return self
        grading = self.spec.grading.model_copy(update={"rate": rate})
        return Challenge(self.path, self.spec.model_copy(update={"grading": grading}))

    def grade_config(self, scale: LoadScale | None = None) -> GradeConfig:
        """What the runner needs; ``scale`` says why the load runs at ``grading.rate``."""
        s = self.spec
        return GradeConfig(
            challenge=s.id,
            parameters=dict(s.parameters),
            weights=dict(s.scoring.weights),
            gates=s.scoring.gates,
            pass_mark=s.scoring.pass_mark,
            thresholds=dict(s.thresholds),
            scale=scale or LoadScale(s.grading.rate, s.stated_load_rate),
            budgets_s={"load": s.grading.duration_s + s.grading.fault_duration_s + 30},
            recovery_s=s.grading.recovery_s,
        )

    def scenario(self) -> Scenario:
        """Import ``scenario.py`` and instantiate its ``Scenario`` subclass."""
        from grading.scenario import Scenario
        from grading.standard import StandardScenario

        name = f"{self.module}.scenario"
        spec = importlib.util.spec_from_file_location(name, self.path / "scenario.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type)
            and issubclass(obj, Scenario)
            and obj not in (Scenario, StandardScenario)
        ]
        if len(found) != 1:
            raise ChallengeError(f"{self.path / 'scenario.py'}: expected one Scenario subclass")
        return found[0](self.spec)

    @cached_property
    def solutions(self) -> list[Solution]:
        root = self.path / "solutions"
        found = []
        for main in sorted(root.glob("*/__main__.py")):
            doc = main.read_text().split('"""')
            summary = doc[1].strip().splitlines()[0] if len(doc) > 2 else main.parent.name
            found.append(
                Solution(main.parent.name, f"{self.module}.solutions.{main.parent.name}", summary)
            )
        return found

    def solution(self, name: str) -> Solution:
        for s in self.solutions:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.solutions)
        raise ChallengeError(f"{self.id} has no reference design {name!r} (known: {known})")

    @cached_property
    def baselines(self) -> dict[str, dict[str, Any]]:
        """Stored results of the reference designs (``baselines.json``), by solution name."""
        path = self.path / "baselines.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def statement(self, public_host: str | None = None) -> str:
        """The statement; ``public_host`` (default: ``CRUSCIBLE_PUBLIC_HOST``) adds how to use
        an exposed environment from elsewhere (the template's ``remote``)."""
        host = os.environ.get(ENV_PUBLIC_HOST, "") if public_host is None else public_host
        return self._env.get_template("statement.md.j2").render(
            c=self.spec, params=self.spec.parameters, remote=remote_note(host.strip())
        )

    def discussion(
        self, report: Report | None, baselines: dict[str, dict[str, Any]] | None = None
    ) -> str:
        """The trade-off discussion, written from ``report`` next to the reference designs.

        Without a report it discusses the reference designs alone (the *Show trade-offs* button).
        """
        return self._env.get_template("discussion.md.j2").render(
            c=self.spec,
            params=self.spec.parameters,
            r=report,
            m=report.metrics if report else {},
            arch=report.architecture if report else None,
            baselines=self.baselines if baselines is None else baselines,
        )

    def tradeoffs(self) -> str:
        return self.discussion(None)


class Catalog:
    def __init__(self, challenges: list[Challenge], errors: list[str] | None = None) -> None:
        self._by_id = {c.id: c for c in challenges}
        self.errors = errors or []  # challenges left out, each with its reason

    @classmethod
    def load(cls, root: Path = ROOT) -> Catalog:
        """Every valid challenge under ``root``; a broken one is left out and its error kept."""
        loaded, errors = [], []
        for folder in sorted(p for p in root.iterdir() if _has_spec(p)):
            try:
                loaded.append(Challenge.load(folder))
            except ChallengeError as exc:
                log.error("challenge left out of the catalog: %s", exc)
                errors.append(str(exc))
        if not loaded:
            raise ChallengeError(f"no usable challenge under {root}: " + "; ".join(errors))
        return cls(loaded, errors)

    def __iter__(self) -> Iterator[Challenge]:
        return iter(sorted(self._by_id.values(), key=lambda c: (c.spec.rotation, c.id)))

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, challenge_id: str) -> Challenge:
        try:
            return self._by_id[challenge_id]
        except KeyError:
            known = ", ".join(sorted(self._by_id))
            raise ChallengeError(f"unknown challenge {challenge_id!r} (known: {known})") from None

    def for_day(self, day: date) -> Challenge:
        """The daily rotation: catalog order (rotation, then id), one per day, cycling."""
        ordered = list(self)
        return ordered[day.toordinal() % len(ordered)]
