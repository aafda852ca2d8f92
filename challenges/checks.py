"""A scenario's check ids, declared once, and their agreement with ``challenge.yaml``.

A challenge's ``scenario.py`` declares the ids of the checks it records in its ``Scenario``
subclass, once, as a literal::

    class UrlShortenerScenario(Scenario):
        checks = ("contract.healthz", "contract.create", ...)

The engine refuses a check whose id is not declared there (``grading.scenario.Grade.check``),
and the catalog reads the declaration *without importing* the scenario (the catalog stays
free of the grading engine) to cross-check it against ``scoring.weights`` and
``scoring.gates`` when the challenge loads: a weight or gate naming an id the scenario never
records would always earn 0 points or fail the grade, and a recorded id without a weight
would earn nothing unnoticed. Errors have the ``file: field: reason`` shape of the rest of
the catalog's errors.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

from challenges.schema import Scoring

ATTRIBUTE = "checks"
SCENARIO_BASES = ("Scenario", "StandardScenario")  # grading.scenario, grading.standard


class DeclarationError(ValueError):
    """``scenario.py`` has no readable check declaration; the message is ``file: field: reason``."""


def _base_names(node: ast.ClassDef) -> set[str]:
    return {b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases}


def _is_scenario_class(node: ast.ClassDef) -> bool:
    return bool(_base_names(node) & set(SCENARIO_BASES))


def declared_checks(scenario_path: Path) -> tuple[str, ...]:
    """The check ids ``scenario_path`` declares, in order.

    Read from the ``checks = (...)`` literal in the body of its one class deriving from
    ``Scenario`` or ``StandardScenario``. Raises :class:`DeclarationError` when the file is not valid Python, holds no
    such class or declaration, or the declaration is not a literal tuple of distinct,
    non-empty strings.
    """
    where = f"{scenario_path}: {ATTRIBUTE}"
    try:
        tree = ast.parse(scenario_path.read_text(), filename=str(scenario_path))
    except SyntaxError as exc:
        raise DeclarationError(f"{scenario_path}: not valid Python: {exc}") from None
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and _is_scenario_class(n)]
    if len(classes) != 1:
        raise DeclarationError(f"{scenario_path}: expected one Scenario subclass")
    value = None
    for node in classes[0].body:
        if isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        else:
            continue
        if ATTRIBUTE in names:
            value = node.value
    if value is None:
        raise DeclarationError(
            f"{where}: not declared; list the check ids the scenario records as "
            f"`{ATTRIBUTE} = (...)` in {classes[0].name}"
        )
    try:
        ids = ast.literal_eval(value)
    except ValueError:
        raise DeclarationError(f"{where}: must be a literal tuple of check ids") from None
    if not isinstance(ids, tuple | list) or not all(isinstance(i, str) and i for i in ids):
        raise DeclarationError(f"{where}: must be a literal tuple of check ids")
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise DeclarationError(f"{where}: declared more than once: {', '.join(repeated)}")
    return tuple(ids)


def mismatches(yaml_path: Path, scoring: Scoring, declared: Sequence[str]) -> list[str]:
    """Every disagreement between ``scoring`` and the ``declared`` check ids, one
    ``file: field: reason`` line each (empty when they agree)."""
    known = set(declared)
    problems = [
        f"{yaml_path}: scoring.weights.{check_id}: scenario.py records no check "
        f"{check_id!r}, so it would always earn 0 points"
        for check_id in scoring.weights
        if check_id not in known
    ]
    problems += [
        f"{yaml_path}: scoring.gates: scenario.py records no check {check_id!r}, "
        "so the gate could never pass"
        for check_id in scoring.gates
        if check_id not in known
    ]
    problems += [
        f"{yaml_path}: scoring.weights.{check_id}: missing; scenario.py records this check, "
        "give it a weight (0 when it earns nothing)"
        for check_id in declared
        if check_id not in scoring.weights
    ]
    return problems


def standard_mismatches(
    scenario_path: Path, declared: Sequence[str], thresholds: Sequence[str], faults: bool
) -> list[str]:
    """For a scenario on ``StandardScenario``: the ids its engine phases record that it does
    not declare (``contract.healthz``; ``load.<name>`` for each of ``thresholds``; with
    ``faults``, ``faults.availability``: ``faults.recovery`` is judged only where declared),
    one ``file: field: reason`` line each. Without this, the first such id would stop its
    grade mid-phase."""
    recorded = ["contract.healthz", *(f"load.{name}" for name in thresholds)]
    if faults:
        recorded.append("faults.availability")
    return [
        f"{scenario_path}: {ATTRIBUTE}: missing {check_id!r}, which the engine records "
        "(grading.standard)"
        for check_id in recorded
        if check_id not in declared
    ]


def on_standard_phases(scenario_path: Path) -> bool:
    """Whether the scenario's class derives from ``StandardScenario`` (read, not imported)."""
    tree = ast.parse(scenario_path.read_text(), filename=str(scenario_path))
    return any(
        isinstance(node, ast.ClassDef) and "StandardScenario" in _base_names(node)
        for node in tree.body
    )
