"""Phase windows in the agent's timezone. The night of date D runs from its start hour on D into
D+1 and belongs to D (plan, partition and budget)."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta

from cass_pipelines.domain.categories import PHASES
from cass_pipelines.domain.settings import Settings


def phase_window(day: date, phase: str, settings: Settings) -> tuple[datetime, datetime]:
    start_h, end_h = settings.phase_hours[phase]
    start = datetime.combine(day, time(start_h), tzinfo=settings.tz)
    end_day = day + timedelta(days=1) if end_h <= start_h else day
    return start, datetime.combine(end_day, time(end_h), tzinfo=settings.tz)


def phase_at(moment: datetime, settings: Settings) -> tuple[date, str]:
    """The (date, phase) partition a moment belongs to; hours before the morning belong to last night."""
    local = moment.astimezone(settings.tz)
    for day in (local.date(), local.date() - timedelta(days=1)):
        for phase in PHASES:
            start, end = phase_window(day, phase, settings)
            if start <= local < end:
                return day, phase
    raise ValueError(f"phase hours leave {local.isoformat()} uncovered")  # settings validation prevents this


def remaining_phases(day: date, from_phase: str) -> list[str]:
    """The phase itself and those after it on the same plan date."""
    return list(PHASES[PHASES.index(from_phase):])


def day_bounds(day: date, settings: Settings) -> tuple[datetime, datetime]:
    """The span of a budget/plan day: first phase start to last phase end."""
    return phase_window(day, PHASES[0], settings)[0], phase_window(day, PHASES[-1], settings)[1]
