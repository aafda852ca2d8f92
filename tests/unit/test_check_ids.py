"""Check ids are declared once in scenario.py and cross-checked against challenge.yaml:
a weight or gate the scenario never records, or a recorded check without a weight, keeps a
challenge out with ``file: field: reason``; the engine refuses an undeclared id."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from challenges.catalog import ROOT, Catalog, Challenge, ChallengeError
from challenges.checks import declared_checks
from grading.config import GradeConfig
from grading.report import Report, Status
from grading.runner import grade
from grading.scenario import Grade, Scenario, UndeclaredCheck
from tests.grading.servers import serve_app

REAL = ("event-ingestion", "file-pipeline", "notification-service", "rate-limiter", "url-shortener")


def test_the_real_challenges_load_with_declarations_matching_their_weights() -> None:
    catalog = Catalog.load()
    assert catalog.errors == []
    assert set(REAL) <= {c.id for c in catalog}  # and every challenge added since
    for challenge in catalog:
        declared = declared_checks(challenge.path / "scenario.py")
        assert sorted(declared) == sorted(challenge.spec.scoring.weights), challenge.id
        assert set(challenge.spec.scoring.gates) <= set(declared), challenge.id
        # the engine reads the very declaration the catalog parsed
        assert type(challenge.scenario()).checks == declared, challenge.id


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    dest = tmp_path / "rate-limiter"
    shutil.copytree(ROOT / "rate-limiter", dest, ignore=shutil.ignore_patterns("solutions"))
    return dest


def edit_yaml(folder: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = folder / "challenge.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def edit_scenario(folder: Path, old: str, new: str) -> None:
    path = folder / "scenario.py"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_a_weight_for_a_check_the_scenario_never_records_is_refused(copy: Path) -> None:
    edit_yaml(copy, lambda d: d["scoring"]["weights"].update({"contract.typo": 5}))
    with pytest.raises(ChallengeError) as exc:
        Challenge.load(copy)
    assert str(exc.value) == (
        f"{copy / 'challenge.yaml'}: scoring.weights.contract.typo: scenario.py records no "
        "check 'contract.typo', so it would always earn 0 points"
    )


def test_a_gate_on_a_check_the_scenario_never_records_is_refused(copy: Path) -> None:
    def gate(d: dict) -> None:  # type: ignore[type-arg]
        d["scoring"]["weights"]["accuracy.exact"] = 5  # the schema wants gates weighted
        d["scoring"]["gates"].append("accuracy.exact")

    edit_yaml(copy, gate)
    with pytest.raises(ChallengeError) as exc:
        Challenge.load(copy)
    lines = str(exc.value).splitlines()
    assert (
        f"{copy / 'challenge.yaml'}: scoring.gates: scenario.py records no check "
        "'accuracy.exact', so the gate could never pass"
    ) in lines
    assert any(
        line.endswith(
            "scoring.weights.accuracy.exact: scenario.py records no check "
            "'accuracy.exact', so it would always earn 0 points"
        )
        for line in lines
    )


def test_a_recorded_check_without_a_weight_is_refused(copy: Path) -> None:
    edit_yaml(copy, lambda d: d["scoring"]["weights"].pop("contract.cost"))
    with pytest.raises(ChallengeError) as exc:
        Challenge.load(copy)
    assert str(exc.value) == (
        f"{copy / 'challenge.yaml'}: scoring.weights.contract.cost: missing; scenario.py "
        "records this check, give it a weight (0 when it earns nothing)"
    )


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("    checks = (", "    _checks = (", r"scenario.py: checks: not declared"),
        (
            "    checks = (",
            "    checks = tuple(",
            r"scenario.py: checks: must be a literal tuple of check ids",
        ),
        (
            '        "contract.healthz",\n',
            '        "contract.healthz",\n        "contract.healthz",\n',
            r"scenario.py: checks: declared more than once: contract.healthz",
        ),
        (
            "class RateLimiterScenario(StandardScenario):",
            "class Broken(StandardScenario:",
            r"not valid Python",
        ),
    ],
    ids=["missing", "not-a-literal", "repeated", "syntax"],
)
def test_an_unreadable_declaration_is_refused_with_the_file(
    copy: Path, old: str, new: str, message: str
) -> None:
    edit_scenario(copy, old, new)
    with pytest.raises(ChallengeError, match=message) as exc:
        Challenge.load(copy)
    assert str(exc.value).startswith(str(copy / "scenario.py"))


def test_validate_reports_a_mismatch_as_file_field_reason(copy: Path, tmp_path: Path) -> None:
    edit_yaml(copy, lambda d: d["scoring"]["weights"].update({"contract.typo": 5}))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRUSCIBLE_")}
    env["CRUSCIBLE_DATA_DIR"] = str(data_dir)
    done = subprocess.run(
        [sys.executable, "-m", "bot", "challenges", "validate", str(copy), "--no-grade"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "challenge.yaml: scoring.weights.contract.typo: scenario.py records no check" in (
        " ".join(done.stderr.split())
    )


def _grade(report: Report, checks: tuple[str, ...]) -> Grade:
    """A grade that only records checks (it sends nothing)."""
    return Grade(
        config=GradeConfig("example", weights={"contract.a": 10}),
        target=None,  # type: ignore[arg-type]
        http=None,  # type: ignore[arg-type]
        report=report,
        env=None,
        injector=None,
        progress=None,
        checks=checks,
    )


def test_the_engine_refuses_an_undeclared_check_and_records_the_declared_ones() -> None:
    report = Report("example", "http://127.0.0.1:1", None, 1)
    g = _grade(report, ("contract.a",))
    g.check("contract.a", "declared", True)
    with pytest.raises(UndeclaredCheck, match="'contract.typo' is not among"):
        g.check("contract.typo", "a typo", True)
    g.check("load.crashed", "the runner's own", Status.ERROR, detail="x")  # engine checks pass
    assert [(c.id, c.points) for c in report.checks] == [("contract.a", 10.0), ("load.crashed", 0)]


def test_an_undeclared_scenario_records_any_check() -> None:
    report = Report("example", "http://127.0.0.1:1", None, 1)
    _grade(report, ()).check("anything.goes", "ad hoc", True)
    assert [c.id for c in report.checks] == ["anything.goes"]


class _TypoScenario(Scenario):
    checks = ("contract.healthz",)

    async def contract(self, g: Grade) -> None:
        ex = await g.request("GET", "/healthz")
        g.check("contract.healthz", "GET /healthz answers 200", ex.status == 200, exchange=ex)
        g.check("contract.helthz", "a typo of the declared id", True)


async def test_a_grade_stops_at_an_undeclared_check_and_says_which() -> None:
    config = GradeConfig("example", weights={"contract.healthz": 5}, pass_mark=0)
    async with serve_app() as url:  # 127.0.0.1, an ephemeral port
        outcome = await grade(_TypoScenario(), config, url)
    checks = {c.id: c for c in outcome.report.checks}
    assert checks["contract.healthz"].status == Status.PASS
    assert "contract.helthz" not in checks  # never scored, never silently worth 0
    crashed = checks["contract.crashed"]
    assert crashed.status == Status.ERROR
    assert "'contract.helthz' is not among the scenario's declared checks" in crashed.detail
    assert not outcome.report.passed


def test_a_threshold_the_engine_would_judge_under_an_undeclared_id_is_refused(copy: Path) -> None:
    """rate-limiter runs on the engine's standard phases: a threshold named in the YAML is
    judged as ``load.<name>``, which the scenario must declare (else its grade would stop
    mid-load on an undeclared id)."""
    edit_yaml(copy, lambda d: d["thresholds"].update({"p90": "p90 < 5ms"}))
    with pytest.raises(ChallengeError) as exc:
        Challenge.load(copy)
    assert str(exc.value) == (
        f"{copy / 'scenario.py'}: checks: missing 'load.p90', which the engine records "
        "(grading.standard)"
    )
