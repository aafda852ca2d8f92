"""Refusals a learner or an admin reads."""

from __future__ import annotations


class CoachError(Exception):
    """A refusal the learner should read (unknown challenge, quota, bad URL…)."""


class RateLimited(CoachError):
    """Too many commands too fast; ``retry_after`` seconds until the next one is accepted."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            f"slow down: too many commands in a row — try again in {max(1, round(retry_after))} s"
        )
        self.retry_after = retry_after
