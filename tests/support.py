"""The suite's calendar. "Today" is injected, never read from the machine: every test runs as if it
were TODAY (default 2026-11-27, 08:00 UTC; set CASS_TEST_TODAY=YYYY-MM-DD to run the suite as of
another date). The sample conversations are shifted relative to it, so results do not depend on the
calendar. Days the tests use are named relative to TODAY."""
from __future__ import annotations

import os
from datetime import date, datetime, time, timedelta, timezone

TODAY = date.fromisoformat(os.environ.get("CASS_TEST_TODAY", "2026-11-27"))
NOW = datetime.combine(TODAY, time(8), tzinfo=timezone.utc)
SAMPLE_DAY = TODAY - timedelta(days=7)     # a day in the middle of the sample conversations
YESTERDAY = TODAY - timedelta(days=1)


def days_before(n: int) -> date:
    return TODAY - timedelta(days=n)
