"""phase_job and manual_work_job (the code location's executor: steps on threads in the run's process)."""

from datetime import date

import dagster as dg

from cass_pipelines.defs.day.work import action_chains, after_chains, emit_units, unit_groups
from cass_pipelines.defs.resources import CassResource
from cass_pipelines.domain.categories import PHASES
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.domain.states import UnitOrigin
from cass_pipelines.services.runner import job_unit, summarize
from cass_pipelines.store import plans

PHASE_ASSETS = ["phase_plan", "phase_work", "work_summaries", "cost_records"]


class ManualWorkConfig(dg.Config):
    template_id: str
    focus: str = ""
    phase: str = ""   # default: the current phase
    date: str = ""    # default: today in the agent's timezone
    force: bool = False  # run even while paused; budget limits still apply


def build_phase_job(phase_partitions: dg.PartitionsDefinition):
    return dg.define_asset_job("phase_job", selection=PHASE_ASSETS, partitions_def=phase_partitions,
                               description="Plan a phase, run its work (one step per action), summarise and cost it.")


def build_manual_work_job(max_length: int) -> dg.JobDefinition:
    @dg.op(out=unit_groups(max_length), pool="cass_store")   # the queue runs it alone on the store
    def start_manual_work(context: dg.OpExecutionContext, config: ManualWorkConfig, cass: CassResource):
        rt, clock = cass.for_run(context), cass.clock()
        if config.template_id not in rt.registry.templates:
            raise dg.Failure(f"unknown template '{config.template_id}'; see `cass-pipelines catalog`")
        now = clock.now()
        today, phase = phase_at(now, rt.settings)
        if config.phase and config.phase not in PHASES:
            raise dg.Failure(f"phase: unknown phase '{config.phase}'; choose from {', '.join(PHASES)}")
        try:
            day = date.fromisoformat(config.date) if config.date else today
        except ValueError:
            raise dg.Failure(f"date: expected YYYY-MM-DD, got '{config.date}'") from None
        # Its date is its budget day: one of the date partitions, never a day ahead with a budget untouched.
        if not rt.settings.first_date(today) <= day <= today:
            raise dg.Failure(f"date: {day} is not a date partition; dates run from {rt.settings.first_date(today)} "
                             f"to today {today}")
        uid = job_unit(rt, day, config.phase or phase, config.template_id, f"m{now:%H%M%S%f}",
                       config.focus or rt.registry.templates[config.template_id].name, now,
                       origin=UnitOrigin.FORCED if config.force else UnitOrigin.MANUAL)
        context.log.info(f"manual unit {uid}: {config.template_id} on '{config.focus}'")
        yield from emit_units(rt, [plans.get_unit(rt.store, uid) or {}])

    @dg.op(ins=after_chains(max_length), pool="cass_store")
    def finish_manual_work(context: dg.OpExecutionContext, cass: CassResource) -> None:
        rt = cass.for_run(context)
        unit = plans.units_for_run(rt.store, context.run_id)[0]
        summarize(rt, unit, cass.clock(), context.run_id)
        context.log.info(f"manual unit {unit['id']}: {unit['status']} {unit['reason'] or unit['error'] or ''}")

    @dg.job(name="manual_work_job", description="Run one work unit now (template, focus, phase), under the same budget rules.")
    def manual_work_job():
        finish_manual_work(**action_chains(start_manual_work(), max_length))

    return manual_work_job
