"""Jobs. Phase runs use the in-process executor: a multiprocess step costs ~2 s of start-up here."""

from datetime import date

import dagster as dg

from cass_pipelines.assets.work import action_waves
from cass_pipelines.core.phases import phase_at
from cass_pipelines.core.retry import RetryStatus, retry_dead_letter
from cass_pipelines.core.runner import job_unit, next_position, summarize
from cass_pipelines.resources import CassResource, run_over
from cass_pipelines.store import plans

PHASE_ASSETS = ["phase_plan", "phase_work", "work_summaries", "cost_records"]


class ManualWorkConfig(dg.Config):
    template_id: str
    focus: str = ""
    phase: str = ""   # default: the current phase
    date: str = ""    # default: today in the agent's timezone
    force: bool = False  # run even while paused; budget limits still apply


@dg.op(out={"state": dg.Out(dict), "steps": dg.DynamicOut(dict)})
def start_manual_work(context: dg.OpExecutionContext, config: ManualWorkConfig, cass: CassResource):

    rt, clock = cass.for_run(context), cass.clock()
    if config.template_id not in rt.registry.templates:
        raise dg.Failure(f"unknown template '{config.template_id}'; see `cass-pipelines catalog`")
    now = clock.now()
    day, phase = phase_at(now, rt.settings)
    day = date.fromisoformat(config.date) if config.date else day
    uid = job_unit(rt, day, config.phase or phase, config.template_id, f"m{now:%H%M%S%f}",
                   config.focus or rt.registry.templates[config.template_id].name, now,
                   origin="forced" if config.force else "manual")
    context.log.info(f"manual unit {uid}: {config.template_id} on '{config.focus}'")
    unit = plans.get_unit(rt.store, uid)
    state = {uid: next_position(rt, unit)}
    yield dg.Output(state, output_name="state")
    action_id = rt.registry.templates[config.template_id].action_sequence[0]
    yield dg.DynamicOutput({"unit_id": uid, "position": 0}, output_name="steps",
                           mapping_key=f"{uid}__{action_id.replace('.', '_')}")


@dg.op
def finish_manual_work(context: dg.OpExecutionContext, cass: CassResource, state: dict, outcomes: list[dict]) -> dict:
    rt = cass.for_run(context)
    unit = plans.units_for_run(rt.store, context.run_id)[0]
    summarize(rt, unit, cass.clock(), context.run_id)
    context.log.info(f"manual unit {unit['id']}: {unit['status']} {unit['reason'] or unit['error'] or ''}")
    return {"work_unit_id": unit["id"], "status": unit["status"]}


class DeadLetterRetryConfig(dg.Config):
    dead_letter_id: str   # from `cass-pipelines dlq list` or the dead_letter_sensor's tick


@dg.op
def retry_dead_letter_op(context: dg.OpExecutionContext, config: DeadLetterRetryConfig, cass: CassResource) -> dict:
    """Run a dead letter's work again, through the same claims and budget as any run."""
    rt = cass.for_run(context)
    outcome = retry_dead_letter(rt, config.dead_letter_id, cass.clock(), run_id=context.run_id,
                                is_run_over=run_over(context.instance), log=context.log.warning)
    context.log.info(f"dead letter {outcome.dead_letter_id}: {outcome.status.value}: {outcome.message}")
    if outcome.status is RetryStatus.FAILED:
        raise dg.Failure(f"dead letter {outcome.dead_letter_id}: {outcome.message}", metadata=outcome.as_dict())
    return outcome.as_dict()


def build_jobs(phase_partitions, date_partitions, waves: int) -> list:
    @dg.job(name="manual_work_job", executor_def=dg.in_process_executor,
            description="Run one work unit now (template, focus, phase), under the same budget rules.")
    def manual_work_job():
        state, steps = start_manual_work()
        finish_manual_work(*action_waves(state, steps, waves))

    @dg.job(name="dead_letter_retry_job", executor_def=dg.in_process_executor,
            description="Retry one dead letter (launchpad config: dead_letter_id).")
    def dead_letter_retry_job():
        retry_dead_letter_op()

    return [
        dg.define_asset_job("phase_job", selection=PHASE_ASSETS, partitions_def=phase_partitions,
                            executor_def=dg.in_process_executor,
                            description="Plan a phase, run its work (one step per action), summarise and cost it."),
        dg.define_asset_job("journal_job", selection=["daily_journal"], partitions_def=date_partitions,
                            executor_def=dg.in_process_executor, description="Write a day's journal entry."),
        dg.define_asset_job("memory_job", selection=["conversation_summaries"], executor_def=dg.in_process_executor,
                            description="Summarise conversations that went idle."),
        manual_work_job,
        dead_letter_retry_job,
    ]
