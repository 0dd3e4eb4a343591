"""week_job (the week's intention) and week_journal_job."""
import dagster as dg


def build_week_jobs(partitions: dg.PartitionsDefinition) -> list:
    return [
        dg.define_asset_job("week_job", selection=["weekly_intention"], partitions_def=partitions,
                            description="Plan the week: goals and intention."),
        dg.define_asset_job("week_journal_job", selection=["weekly_journal"], partitions_def=partitions,
                            description="Write the past week's journal."),
    ]
