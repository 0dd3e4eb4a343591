"""The week: weekly_intention and weekly_journal (weekly partitions), week_job, week_journal_job and
their schedules."""
import dagster as dg

from cass_pipelines.defs.context import DefsContext, load_time_context
from cass_pipelines.defs.week.assets import build_week_assets, week_partitions
from cass_pipelines.defs.week.jobs import build_week_jobs
from cass_pipelines.defs.week.schedules import build_week_schedules


def build(ctx: DefsContext) -> dg.Definitions:
    weeks = week_partitions(ctx.settings)
    week_job, journal_job = build_week_jobs(weeks)
    return dg.Definitions(assets=build_week_assets(weeks), jobs=[week_job, journal_job],
                          schedules=build_week_schedules(ctx.settings, week_job, journal_job))


@dg.definitions
def defs() -> dg.Definitions:
    return build(load_time_context())
