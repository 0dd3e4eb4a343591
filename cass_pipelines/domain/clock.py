"""The clock is injected: domain code asks a Clock, never datetime.now().

`CASS_NOW` (an ISO-8601 timestamp with offset) moves the process clock to that instant: time then
runs on from there, so ordering by time still holds while "today" is whatever was asked for. Tests,
simulated weeks and demos of a given date use it; the suite's result does not depend on the calendar.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Mapping, Protocol

NOW_ENV = "CASS_NOW"
_STARTED = time.monotonic()   # one anchor per process: every clock of the process agrees


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


@dataclass(frozen=True)
class FixedClock:
    at: datetime

    def now(self) -> datetime:
        return self.at


@dataclass(frozen=True)
class ShiftedClock:
    """Starts at `start` when the process started and runs at real speed."""
    start: datetime

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - _STARTED)


class ClockError(ValueError):
    pass


def parse_now(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ClockError(f"{NOW_ENV}={text[:60]!r}: not an ISO-8601 timestamp "
                         "(expected e.g. 2026-11-27T08:00:00+00:00)") from None
    if moment.tzinfo is None:
        raise ClockError(f"{NOW_ENV}={text[:60]!r}: the timestamp needs a UTC offset (+00:00 or Z)")
    return moment


def clock_from_env(env: Mapping[str, str] | None = None) -> Clock:
    """The process clock: shifted to CASS_NOW when it is set, the system clock otherwise."""
    text = (os.environ if env is None else env).get(NOW_ENV, "")
    return ShiftedClock(parse_now(text)) if text.strip() else SystemClock()
