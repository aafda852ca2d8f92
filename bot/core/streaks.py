"""Streaks: consecutive days with a graded submission, in the learner's own timezone.

A day counts when a submission the learner made that local day was graded (its status is
``done``, whatever the score): a URL refused before grading, a grade that ended in an error
and a cancelled one do not count. Grace: one missed day between two active days does not break a streak (it
is not counted either); two missed days in a row do. The streak is current while its last
active day is today, yesterday, or the day before yesterday (yesterday being the one miss) —
so a learner who missed yesterday keeps the streak by submitting today.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

COUNTED_STATUS = "done"  # the submissions whose day counts
MAX_GAP = timedelta(days=2)  # between two active days: one missed day in between


def local_days(moments: Iterable[datetime], timezone: str) -> set[date]:
    zone = ZoneInfo(timezone)
    return {m.astimezone(zone).date() for m in moments}


def current_streak(days: set[date], today: date) -> int:
    """Active days in the chain that ends at the latest active day, if that chain is alive."""
    chain = sorted((d for d in days if d <= today), reverse=True)
    if not chain or today - chain[0] > MAX_GAP:
        return 0
    n = 1
    for newer, older in zip(chain, chain[1:], strict=False):
        if newer - older > MAX_GAP:
            break
        n += 1
    return n
