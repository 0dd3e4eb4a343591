"""The day: phase_plan -> phase_work (one step per action) -> work_summaries, cost_records; phase_job,
manual_work_job and one schedule per phase."""
import dagster as dg

from cass_pipelines.defs.context import DefsContext, load_time_context
from cass_pipelines.defs.day.jobs import build_manual_work_job, build_phase_job
from cass_pipelines.defs.day.phase_plan import build_phase_plan
from cass_pipelines.defs.day.results import build_results
from cass_pipelines.defs.day.schedules import build_phase_schedule
from cass_pipelines.defs.day.work import build_actions_check, build_phase_work
from cass_pipelines.domain.categories import PHASES


def build(ctx: DefsContext) -> dg.Definitions:
    phase_job, length = build_phase_job(ctx.phases), ctx.registry.max_sequence_length
    return dg.Definitions(
        assets=[build_phase_plan(ctx.phases), build_phase_work(ctx.phases, length), *build_results(ctx.phases)],
        asset_checks=[build_actions_check(ctx.phases)],
        jobs=[phase_job, build_manual_work_job(length)],
        schedules=[build_phase_schedule(ctx.settings, phase, phase_job) for phase in PHASES])


@dg.definitions
def defs() -> dg.Definitions:
    return build(load_time_context())
