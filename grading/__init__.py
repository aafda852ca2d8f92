"""The grader engine: runner, HTTP and load generation, metrics, nemesis, telemetry, scoring, reports.

What a challenge's ``scenario.py`` may import from here directly (its public API besides
:mod:`grading.scenario`): :func:`percentile`, :func:`poll_until`, :func:`json_body`,
:func:`json_object`, :data:`JSON_HEADERS` (a load request's JSON content type) and
:data:`RECOVERY_S`, the default recovery limit.
"""

from grading.config import RECOVERY_S
from grading.helpers import JSON_HEADERS, json_body, json_object, percentile, poll_until

__all__ = ["JSON_HEADERS", "RECOVERY_S", "json_body", "json_object", "percentile", "poll_until"]
