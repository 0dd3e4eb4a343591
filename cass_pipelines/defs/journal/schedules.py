"""journal_schedule: the finished day's journal after its night phase ends, and deferred journals again."""
from __future__ import annotations

from datetime import timedelta

import dagster as dg

from cass_pipelines.defs.day.schedules import tick_time
from cass_pipelines.defs.resources import CassResource
from cass_pipelines.defs.ticks import BUSY, SENSOR_DB_DEADLINE_S, unless_busy
from cass_pipelines.domain.categories import PHASES
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.domain.settings import Settings
from cass_pipelines.services.watches import waiting_journals

JOURNAL_DELAY_MINUTES = 15


def build_journal_schedule(settings: Settings, job) -> dg.ScheduleDefinition:
    night_end = settings.phase_hours[PHASES[-1]][1]

    @dg.schedule(name="journal_schedule", job=job, cron_schedule=f"{JOURNAL_DELAY_MINUTES} {night_end} * * *",
                 execution_timezone=settings.timezone, default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Write the finished day's journal at {night_end:02d}:{JOURNAL_DELAY_MINUTES} "
                             f"{settings.timezone}, after its night phase ends.")
    def journal_schedule(context: dg.ScheduleEvaluationContext, cass: CassResource):
        # The night belongs to the day it started on: the day whose night just ended.
        day, _ = phase_at(tick_time(context, settings) - timedelta(minutes=JOURNAL_DELAY_MINUTES + 1), settings)
        today = tick_time(context, settings).date()
        if day < settings.first_date(today):   # the first tick on start_date: the night before is no partition
            return dg.SkipReason(f"{day} is before the first date partition, {settings.first_date(today)}")
        requests = [dg.RunRequest(run_key=f"journal|{day.isoformat()}", partition_key=day.isoformat(),
                                  tags={"cass/date": day.isoformat(), "cass/trigger": "schedule"})]
        # Journals of earlier days left deferred (money, or a batch that outlasted the wait) are tried
        # again, once per tick.
        waiting = unless_busy(lambda: waiting_journals(cass.quick_store(SENSOR_DB_DEADLINE_S), settings, day, today))
        for earlier in ([] if waiting is BUSY else waiting):
            requests.append(dg.RunRequest(
                run_key=f"journal|{earlier.isoformat()}|retry|{day.isoformat()}", partition_key=earlier.isoformat(),
                tags={"cass/date": earlier.isoformat(), "cass/trigger": "schedule-catch-up"}))
        return requests

    return journal_schedule
