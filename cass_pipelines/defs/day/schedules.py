"""One schedule per phase, at its start in the agent's timezone.

Each tick requests exactly its `YYYY-MM-DD|phase` partition with a run key, so a tick can never
launch twice; it skips with a readable reason while paused or when the day's budget is spent.
"""

from datetime import datetime

import dagster as dg

from cass_pipelines.defs.partitions import phase_key
from cass_pipelines.defs.resources import CassResource
from cass_pipelines.defs.ticks import BUSY, SENSOR_DB_DEADLINE_S, unless_busy
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.domain.settings import Settings
from cass_pipelines.services.planning import phase_skip_reason
from cass_pipelines.store.db import Store


def skip_reason(store: Store, settings: Settings, day) -> str | None:
    """phase_skip_reason, except that a locked database does not block the tick: the run itself
    re-checks pause and budget before every action."""
    reason = unless_busy(lambda: phase_skip_reason(store, settings, day))
    return None if reason is BUSY else reason


def tick_time(context: dg.ScheduleEvaluationContext, settings: Settings) -> datetime:
    moment = context.scheduled_execution_time or datetime.now(settings.tz)
    return moment.astimezone(settings.tz)


def build_phase_schedule(settings: Settings, phase: str, job) -> dg.ScheduleDefinition:
    start_hour = settings.phase_hours[phase][0]

    @dg.schedule(name=f"{phase}_schedule", job=job, cron_schedule=f"0 {start_hour} * * *",
                 execution_timezone=settings.timezone, default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Start the {phase} phase at {start_hour:02d}:00 {settings.timezone}.")
    def phase_schedule(context: dg.ScheduleEvaluationContext, cass: CassResource):
        day, _ = phase_at(tick_time(context, settings), settings)
        reason = skip_reason(cass.quick_store(SENSOR_DB_DEADLINE_S), settings, day)
        if reason:
            return dg.SkipReason(f"{phase} {day}: {reason}")
        key = f"{day.isoformat()}|{phase}"
        return dg.RunRequest(run_key=key, partition_key=phase_key(day.isoformat(), phase),
                             tags={"cass/phase": phase, "cass/date": day.isoformat(), "cass/trigger": "schedule"})

    return phase_schedule
