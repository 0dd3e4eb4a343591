"""The journal: daily_journal (date partitions), journal_job, journal_schedule and journal_resume_sensor."""
import dagster as dg

from cass_pipelines.defs.context import DefsContext, load_time_context
from cass_pipelines.defs.journal.assets import build_daily_journal
from cass_pipelines.defs.journal.schedules import build_journal_schedule
from cass_pipelines.defs.journal.sensors import build_journal_resume_sensor


def build(ctx: DefsContext) -> dg.Definitions:
    journal_job = dg.define_asset_job("journal_job", selection=["daily_journal"], partitions_def=ctx.dates,
                                      description="Write a day's journal entry.")
    return dg.Definitions(assets=[build_daily_journal(ctx.dates)], jobs=[journal_job],
                          schedules=[build_journal_schedule(ctx.settings, journal_job)],
                          sensors=[build_journal_resume_sensor(ctx.settings, journal_job)])


@dg.definitions
def defs() -> dg.Definitions:
    return build(load_time_context())
