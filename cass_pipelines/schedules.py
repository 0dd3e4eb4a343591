"""One schedule per phase (at its start, in the agent's timezone) and the journal schedule.

Each tick requests exactly its `YYYY-MM-DD|phase` partition with a run key, so a tick can never
launch twice; it skips with a readable reason while paused or when the day's budget is spent.
"""

from datetime import datetime, timedelta

import dagster as dg

from cass_pipelines.core.categories import PHASES
from cass_pipelines.core.phases import phase_at
from cass_pipelines.core.planning import phase_skip_reason
from cass_pipelines.core.settings import Settings
from cass_pipelines.partitions import phase_key
from cass_pipelines.resources import CassResource
from cass_pipelines.sensors import BUSY, SENSOR_DB_DEADLINE_S, unless_busy
from cass_pipelines.store.db import Store
from cass_pipelines.store.plans import deferred_job_dates

JOURNAL_DELAY_MINUTES = 15
JOURNAL_CATCH_UP_DAYS = 7   # deferred journals this recent are tried again by the journal schedule


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


def build_journal_schedule(settings: Settings, job) -> dg.ScheduleDefinition:
    night_end = settings.phase_hours[PHASES[-1]][1]

    @dg.schedule(name="journal_schedule", job=job, cron_schedule=f"{JOURNAL_DELAY_MINUTES} {night_end} * * *",
                 execution_timezone=settings.timezone, default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Write the finished day's journal at {night_end:02d}:{JOURNAL_DELAY_MINUTES} "
                             f"{settings.timezone}, after its night phase ends.")
    def journal_schedule(context: dg.ScheduleEvaluationContext, cass: CassResource):
        # The night belongs to the day it started on: the day whose night just ended.
        day, _ = phase_at(tick_time(context, settings) - timedelta(minutes=JOURNAL_DELAY_MINUTES + 1), settings)
        requests = [dg.RunRequest(run_key=f"journal|{day.isoformat()}", partition_key=day.isoformat(),
                                  tags={"cass/date": day.isoformat(), "cass/trigger": "schedule"})]
        # Journals an earlier day's budget could not pay for are tried again, once per tick.
        waiting = unless_busy(lambda: deferred_job_dates(cass.quick_store(SENSOR_DB_DEADLINE_S), "daily_journal",
                                                          day - timedelta(days=JOURNAL_CATCH_UP_DAYS)))
        for earlier in ([] if waiting is BUSY else [d for d in waiting if d < day]):
            requests.append(dg.RunRequest(
                run_key=f"journal|{earlier.isoformat()}|retry|{day.isoformat()}", partition_key=earlier.isoformat(),
                tags={"cass/date": earlier.isoformat(), "cass/trigger": "schedule-catch-up"}))
        return requests

    return journal_schedule
