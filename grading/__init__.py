"""The grader engine: runner, HTTP and load generation, metrics, nemesis, telemetry, scoring, reports.

What a challenge's ``scenario.py`` may import from here directly (its public API besides
:mod:`grading.scenario`): :func:`percentile`, :func:`poll_until`, :func:`json_body`,
:func:`json_object`, :func:`answered` (a status and a body holding given fields),
:func:`with_retries` (a load's items, some sent again as a client's retries),
:data:`JSON_HEADERS` (a load request's JSON content type), :data:`RECOVERY_S`, the default
recovery limit, and two modules: :mod:`~grading.domain` (seeded text from the whole domain a
contract states: every script, up to the limit) and :mod:`~grading.races` (how likely a race
check was to see a race of a stated size, and bursts until it is sure).
"""

from grading import domain, races
from grading.config import RECOVERY_S
from grading.helpers import (
    JSON_HEADERS,
    answered,
    json_body,
    json_object,
    percentile,
    poll_until,
    with_retries,
)

__all__ = [
    "JSON_HEADERS",
    "RECOVERY_S",
    "answered",
    "domain",
    "json_body",
    "json_object",
    "percentile",
    "poll_until",
    "races",
    "with_retries",
]
