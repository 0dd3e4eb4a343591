"""approval_job: approve (and then run, through the usual claims and budget) or reject work waiting for
a person's approval. Launchpad config: work_unit_id, approve, reason, decided_by."""
import dagster as dg

from cass_pipelines.defs.day.work import BUDGET_DAY_TAG, RUN_DAY, action_chains, after_chains, emit_units, unit_groups
from cass_pipelines.defs.resources import CassResource, run_over
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.services import approvals
from cass_pipelines.services.runner import summarize
from cass_pipelines.store import plans


class ApprovalConfig(dg.Config):
    work_unit_id: str                # from `cass-pipelines approvals list`
    approve: bool = True             # False rejects it
    reason: str = ""                 # required to reject
    decided_by: str = "dagster-ui"


def build_approval_job(max_length: int) -> dg.JobDefinition:
    @dg.op(out=unit_groups(max_length))
    def decide_approval(context: dg.OpExecutionContext, config: ApprovalConfig, cass: CassResource):
        """Record the decision; an approved unit then runs below, through the usual claims and budget."""
        rt, clock = cass.for_run(context), cass.clock()
        if not config.approve and not config.reason.strip():
            raise dg.Failure("a rejection needs a reason (config `reason`)")
        try:
            verdict = approvals.decide(rt, config.work_unit_id, config.approve, config.reason.strip(),
                                       config.decided_by, clock.now(), run_id=context.run_id)
        except approvals.ApprovalError as exc:
            raise dg.Failure(str(exc)) from None
        context.log.info(f"{verdict.work_unit_id}: {verdict.state.value} ({verdict.reason})")
        unit = plans.get_unit(rt.store, config.work_unit_id)
        if config.approve and unit is not None:
            yield from emit_units(rt, [unit])

    @dg.op(ins=after_chains(max_length))
    def finish_approved_work(context: dg.OpExecutionContext, cass: CassResource) -> None:
        """Summarise the unit this run ran (none when the work was rejected)."""
        rt, clock = cass.for_run(context), cass.clock()
        now_at = phase_at(clock.now(), rt.settings)   # paid, as its actions were, from the day it is decided
        for unit in plans.units_for_run(rt.store, context.run_id):
            summarize(rt, unit, clock, context.run_id, is_run_over=run_over(context.instance), budget=now_at)
            context.log.info(f"{unit['id']}: {unit['status']} {unit['reason'] or unit['error'] or ''}")

    @dg.job(name="approval_job", description="Approve (and run) or reject work waiting for approval (launchpad config: work_unit_id, "
                        "approve, reason).", tags={BUDGET_DAY_TAG: RUN_DAY})   # paid from the day it is decided
    def approval_job():
        finish_approved_work(**action_chains(decide_approval(), max_length))

    return approval_job
