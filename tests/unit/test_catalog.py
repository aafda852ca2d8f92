"""The catalog loader: the real catalog loads, and a malformed challenge gets a precise error."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from challenges.catalog import ROOT, Catalog, Challenge, ChallengeError


def test_real_catalog_loads_in_rotation_order() -> None:
    catalog = Catalog.load()
    ids = [c.id for c in catalog]
    assert "rate-limiter" in ids
    assert [c.spec.rotation for c in catalog] == sorted(c.spec.rotation for c in catalog)


def test_daily_rotation_cycles_through_every_challenge() -> None:
    catalog = Catalog.load()
    start = date(2026, 1, 1)
    seen = [catalog.for_day(start + timedelta(days=i)).id for i in range(len(catalog))]
    assert sorted(seen) == sorted(c.id for c in catalog)


def test_statement_shows_the_contract_and_parameters() -> None:
    text = Catalog.load().get("rate-limiter").statement()
    assert "POST /v1/check" in text
    assert "20 requests per 10 seconds" in text


def test_rate_limiter_has_two_reference_designs() -> None:
    solutions = Catalog.load().get("rate-limiter").solutions
    assert len(solutions) >= 2
    assert all(s.module.startswith("challenges.rate-limiter.solutions.") for s in solutions)


def test_unknown_challenge_names_the_known_ones() -> None:
    with pytest.raises(ChallengeError, match=r"unknown challenge 'nope' \(known: .*rate-limiter"):
        Catalog.load().get("nope")


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    dest = tmp_path / "rate-limiter"
    shutil.copytree(ROOT / "rate-limiter", dest, ignore=shutil.ignore_patterns("solutions"))
    return dest


def edit(folder: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = folder / "challenge.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d.update(difficulty=9),
            r"challenge.yaml: difficulty: Input should be less than or equal to 5",
        ),
        (
            lambda d: d.update(resources=["postgres", "mongo"]),
            r"challenge.yaml: resources.1: Input should be",
        ),
        (lambda d: d.pop("scoring"), r"challenge.yaml: scoring: Field required"),
        (
            lambda d: d["thresholds"].update(latency="p99 < fast"),
            r"challenge.yaml: thresholds: .*latency",
        ),
        (
            lambda d: d["scoring"].update(gates=["nope"]),
            r"challenge.yaml: scoring: .*gates not in weights: nope",
        ),
        (
            lambda d: d.update(surprise=1),
            r"challenge.yaml: surprise: Extra inputs are not permitted",
        ),
        (
            lambda d: d["grading"]["faults"][0].update(at_s=[30, 40]),
            r"challenge.yaml: grading: .*must lie within",
        ),
        (
            lambda d: d["grading"]["faults"][0].update(process="worker"),
            r"challenge.yaml: grading.faults.0: .*either a resource or a process",
        ),
        (
            lambda d: d["grading"]["faults"].append(
                {"process": "worker", "action": "pause", "at_s": [0, 1], "heal_after_s": 1}
            ),
            r"challenge.yaml: grading.faults.\d: .*process worker: the only action is kill",
        ),
        (
            lambda d: d["grading"]["faults"].append(
                {"process": "Worker!", "action": "kill", "at_s": [0, 1], "heal_after_s": 1}
            ),
            r"challenge.yaml: grading.faults.\d.process: String should match pattern",
        ),
        (
            lambda d: d.update(id="other-id"),
            r"challenge.yaml: id: 'other-id' differs from the folder name",
        ),
    ],
)
def test_malformed_challenge_yaml_gets_file_field_and_reason(
    copy: Path, change, message: str
) -> None:  # type: ignore[no-untyped-def]
    edit(copy, change)
    with pytest.raises(ChallengeError, match=message):
        Challenge.load(copy)


def test_yaml_syntax_error_is_reported_with_the_file(copy: Path) -> None:
    (copy / "challenge.yaml").write_text("id: [unclosed\n")
    with pytest.raises(ChallengeError, match=r"challenge.yaml: not valid YAML"):
        Challenge.load(copy)


def test_a_key_given_twice_is_refused_not_overridden(copy: Path) -> None:
    path = copy / "challenge.yaml"
    text = path.read_text()
    assert "    contract.healthz: 5\n" in text
    path.write_text(text.replace("    contract.healthz: 5\n", "    contract.healthz: 5\n" * 2, 1))
    line = text.splitlines().index("    contract.healthz: 5") + 2  # the second one, 1-based
    with pytest.raises(ChallengeError, match=r"found duplicate key 'contract.healthz'") as err:
        Challenge.load(copy)
    assert "\n" not in str(err.value) and f"(line {line}, column 5)" in str(err.value)


def test_missing_files_are_named(copy: Path) -> None:
    (copy / "discussion.md.j2").unlink()
    with pytest.raises(ChallengeError, match=r"missing discussion.md.j2"):
        Challenge.load(copy)


def test_a_broken_challenge_is_left_out_with_its_reason(tmp_path: Path) -> None:
    good = tmp_path / "rate-limiter"
    shutil.copytree(ROOT / "rate-limiter", good, ignore=shutil.ignore_patterns("solutions"))
    broken = tmp_path / "half-done"
    broken.mkdir()
    (broken / "challenge.yaml").write_text("id: half-done\n")
    catalog = Catalog.load(tmp_path)
    assert [c.id for c in catalog] == ["rate-limiter"]
    assert len(catalog.errors) == 1 and "half-done" in catalog.errors[0]


def test_an_empty_catalog_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ChallengeError, match="no usable challenge"):
        Catalog.load(tmp_path)
