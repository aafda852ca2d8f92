"""The smallest complete challenge of docs/authoring.md is real: it loads through the
catalog's own code with its check ids agreeing with its weights, ``cruscible challenges
validate --no-grade`` accepts it, it stays out of the daily rotation, and every file the
document quotes is quoted as it is on disk."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from challenges.catalog import Catalog, Challenge
from challenges.checks import declared_checks, mismatches
from grading.scenario import Scenario

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLES = PROJECT / "tests" / "fixtures" / "challenges"
EXAMPLE = EXAMPLES / "counter"
DOC = PROJECT / "docs" / "authoring.md"
# A quoted file in the document: a marker line naming its path, then one fenced block.
QUOTED = re.compile(r"<!-- file: (?P<path>\S+) -->\n```[a-z0-9]*\n(?P<text>.*?)```\n", re.S)


def test_the_example_loads_through_the_catalog_with_its_checks_matching_its_weights() -> None:
    catalog = Catalog.load(EXAMPLES)
    assert catalog.errors == []
    challenge = catalog.get("counter")
    declared = declared_checks(EXAMPLE / "scenario.py")
    assert mismatches(EXAMPLE / "challenge.yaml", challenge.spec.scoring, declared) == []
    assert sorted(declared) == sorted(challenge.spec.scoring.weights)
    assert set(challenge.spec.scoring.gates) <= set(declared)
    scenario = challenge.scenario()
    assert isinstance(scenario, Scenario)
    assert type(scenario).checks == declared  # the engine refuses any other id
    assert [s.name for s in challenge.solutions] == ["postgres_upsert", "redis_incr"]
    assert challenge.module == "counter"
    assert challenge.import_root == EXAMPLES
    assert "MAX_NAME_LENGTH" in challenge.statement(public_host="")
    assert "reference designs" in challenge.tradeoffs()


def test_the_example_is_not_in_the_real_catalog() -> None:
    assert "counter" not in {c.id for c in Catalog.load()}
    assert Challenge.load(EXAMPLE).path.parent != Catalog.load().get("rate-limiter").path.parent


def test_validate_without_grading_accepts_the_example(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRUSCIBLE_")}
    env["CRUSCIBLE_DATA_DIR"] = str(data_dir)
    done = subprocess.run(
        [sys.executable, "-m", "bot", "challenges", "validate", str(EXAMPLE), "--no-grade"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "counter: schema, templates and scenario load" in done.stdout


def test_every_file_the_document_quotes_is_quoted_as_it_is() -> None:
    quoted = {m["path"]: m["text"] for m in QUOTED.finditer(DOC.read_text())}
    assert "tests/fixtures/challenges/counter/challenge.yaml" in quoted
    assert "tests/fixtures/challenges/counter/scenario.py" in quoted
    for path, text in quoted.items():
        assert (PROJECT / path).read_text() == text, path
