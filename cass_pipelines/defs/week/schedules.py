"""weekly_intention_schedule (Monday, before the first phase; each later morning of the week while the
week has no plan: a pause held Monday's) and weekly_journal_schedule (Monday morning, for the week that
ended; each later morning of the next week while its journal is not written: it waits for a daily
journal still to come)."""
import dagster as dg

from cass_pipelines.defs.day.schedules import tick_time
from cass_pipelines.defs.resources import CassResource
from cass_pipelines.defs.ticks import BUSY, SENSOR_DB_DEADLINE_S, unless_busy
from cass_pipelines.domain.goals import ended_week, week_start
from cass_pipelines.domain.settings import Settings
from cass_pipelines.services.week import WEEK_CATEGORY
from cass_pipelines.store import weeks
from cass_pipelines.store.control import paused_reason
from cass_pipelines.store.goals import intention

INTENTION_LEAD_MINUTES = 30     # the week is planned this long before Monday's first phase
JOURNAL_AFTER_MINUTES = 45      # the past week's journal, after the Sunday night's daily journal


def build_week_schedules(settings: Settings, week_job, journal_job) -> list[dg.ScheduleDefinition]:
    morning = max(0, settings.phase_hours["morning"][0] * 60 - INTENTION_LEAD_MINUTES)
    night_end = settings.phase_hours["night"][1] * 60 + JOURNAL_AFTER_MINUTES

    @dg.schedule(name="weekly_intention_schedule", job=week_job, cron_schedule=f"{morning % 60} {morning // 60} * * *",
                 execution_timezone=settings.timezone, default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Plan the week (goals and intention) on Monday before the first phase (on a later "
                             "morning of the week if a pause held Monday's).")
    def weekly_intention_schedule(context: dg.ScheduleEvaluationContext, cass: CassResource):
        today = tick_time(context, settings).date()
        key = week_start(today).isoformat()
        monday = today.weekday() == 0

        def look() -> tuple[bool, str | None]:
            store = cass.quick_store(SENSOR_DB_DEADLINE_S)
            return intention(store, week_start(today)) is not None, paused_reason(store, WEEK_CATEGORY)

        seen = unless_busy(look)
        if seen is BUSY:   # Monday asks anyway (its run checks the pause); a later morning asks tomorrow
            return dg.RunRequest(run_key=f"week|{key}", partition_key=key, tags={"cass/trigger": "schedule"}) \
                if monday else dg.SkipReason("the store is busy; the next morning asks again")
        planned, paused = seen
        if planned:
            return dg.SkipReason(f"the week of {key} is planned")
        if paused:   # (planned on the fallback now, the week would keep it after `resume`)
            return dg.SkipReason(f"paused: {paused}; the week is planned on the first morning after `resume`")
        return dg.RunRequest(run_key=f"week|{key}" if monday else f"week|{key}|retry|{today.isoformat()}",
                             partition_key=key, tags={"cass/trigger": "schedule" if monday else "schedule-catch-up"})

    @dg.schedule(name="weekly_journal_schedule", job=journal_job,
                 cron_schedule=f"{night_end % 60} {night_end // 60} * * *", execution_timezone=settings.timezone,
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Write the week that ended on Sunday night into the weekly journal, on Monday morning "
                             "(on a later morning of the next week if a daily journal of it was still to come).")
    def weekly_journal_schedule(context: dg.ScheduleEvaluationContext, cass: CassResource):
        today = tick_time(context, settings).date()
        week = ended_week(today, settings.first_date(today))
        if week is None:   # a start_date on a Monday: no week before it
            return dg.SkipReason(f"the week that ended before {week_start(today)} is before the first week partition")
        if today.weekday() == 0:
            return dg.RunRequest(run_key=f"week_journal|{week.isoformat()}", partition_key=week.isoformat(),
                                 tags={"cass/trigger": "schedule"})
        written = unless_busy(lambda: weeks.weekly_journal(cass.quick_store(SENSOR_DB_DEADLINE_S), week) is not None)
        if written is BUSY:
            return dg.SkipReason("the store is busy; the next morning asks again")
        if written:
            return dg.SkipReason(f"the journal of the week of {week} is written")
        return dg.RunRequest(run_key=f"week_journal|{week.isoformat()}|retry|{today.isoformat()}",
                             partition_key=week.isoformat(), tags={"cass/trigger": "schedule-catch-up"})

    return [weekly_intention_schedule, weekly_journal_schedule]
