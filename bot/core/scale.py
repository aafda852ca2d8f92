"""The load rate a grade runs at on this worker, and the sentence that says why.

``CRUSCIBLE_GRADE_RATE`` picks the policy:

- ``measured`` (default): the stated scale when this host sustained it, else the highest rate
  it sustained (:mod:`bot.core.calibration`) divided among the grades the worker runs at once,
  never below the challenge's floor (``grading.rate``); a host that has not measured grades at
  the floor and says so.
- ``stated``: the stated scale, unmeasured (an operator who sized the workers).
- ``floor``: every grade at the floor, on every host (results comparable across hosts of
  different sizes).
"""

from __future__ import annotations

import math
from typing import Literal

from bot.core.calibration import CalibrationStore
from challenges.catalog import Challenge
from grading.report import LoadScale

RateMode = Literal["measured", "stated", "floor"]


class LoadScales:
    """Chooses each grade's :class:`LoadScale` by the policy and this host's measurements."""

    def __init__(self, mode: RateMode, calibrations: CalibrationStore, slots: int = 1) -> None:
        self.mode = mode
        self.calibrations = calibrations
        self.slots = max(1, slots)  # grades this worker runs at once: they share the host

    def for_challenge(self, challenge: Challenge) -> LoadScale:
        spec = challenge.spec
        floor, stated = spec.grading.rate, spec.stated_load_rate
        below = f"graded at {floor:,g} requests/s, below the stated {stated:,g}/s"
        if stated <= floor or self.mode == "stated":
            return LoadScale(stated, stated, "stated")
        if self.mode == "floor":
            return LoadScale(
                floor,
                stated,
                "floor",
                f"{below}: this installation grades every challenge at its floor rate "
                "(CRUSCIBLE_GRADE_RATE=floor)",
            )
        found = self.calibrations.get(challenge)
        if found is None:
            return LoadScale(
                floor,
                stated,
                "unmeasured",
                f"{below}: this worker has not measured what it sustains "
                "(`cruscible challenges calibrate`)",
            )
        # the measurement is of one grade alone: the grades running at once share it
        rate = max(floor, min(stated, float(math.floor(found.sustained_rate / self.slots))))
        if rate >= stated:
            return LoadScale(stated, stated, "measured")
        worker = f"this worker ({found.host}, {found.cpus} CPUs)"
        why = (
            f"the highest rate {worker} sustained"
            if any(t.sustained for t in found.trials)
            else f"{worker} sustained none of the rates it tried above its floor"
        )
        shared = (
            f" ({found.sustained_rate:,g}/s alone, shared by the {self.slots} grades it runs "
            "at once)"
            if self.slots > 1
            else ""
        )
        return LoadScale(
            rate,
            stated,
            "measured",
            f"graded at {rate:,g} requests/s, below the stated {stated:,g}/s: {why}{shared} "
            f"with the reference design {found.reference}, measured {found.measured_at[:10]}",
        )
