"""`phase_plan` (date|phase): the plan the agent writes for itself.

The first phase run of a day asks the agent for the whole remaining day and stores it; each
later phase takes its units from that plan. Re-materialising keeps the plan unless `replan`.
"""

from datetime import date

import dagster as dg

from cass_pipelines.defs import usd
from cass_pipelines.defs.partitions import split_key
from cass_pipelines.defs.resources import CassResource, run_over
from cass_pipelines.domain.budget_rules import PLAN_ACTION_ID
from cass_pipelines.domain.states import UnitStatus
from cass_pipelines.services.failpoints import failpoint
from cass_pipelines.services.metering import MeterContext
from cass_pipelines.services.planning import PhasePlan, UnplannedWhilePaused, plan_phase
from cass_pipelines.services.runner import metered
from cass_pipelines.store.claims import Owner


class PlanConfig(dg.Config):
    replan: bool = False  # re-ask the agent for this and the remaining phases (keeps history)


def _cell(text: object) -> str:
    return str(text or "").replace("|", "/").replace("\n", " ")[:160]


def plan_markdown(plan: PhasePlan) -> str:
    rows = ["| phase | template | focus | motivation | estimate | status |", "|---|---|---|---|---|---|"]
    if plan.made_day_plan is not None:
        for phase, units in plan.made_day_plan.items():
            rows += [f"| {phase} | {u['template_id']} | {_cell(u['focus'])} | {_cell(u['motivation'])} | "
                     f"${u['estimated_cost_usd']:.3f} | planned |" for u in units]
    else:
        rows += [f"| {u['phase']} | {u['template_id']} | {_cell(u['focus'])} | {_cell(u['motivation'])} | "
                 f"${u['estimated_cost_usd']:.3f} | {u['status']} |" for u in plan.units]
    text = f"**Day intention** ({plan.source}): {plan.day_intention}\n\n" + "\n".join(rows)
    if plan.dropped:
        text += "\n\n**Dropped**\n\n" + "\n".join(f"- {d['phase']} {d['template_id']}: {d['reason']}"
                                                  for d in plan.dropped)
    if plan.deferred_now:
        text += "\n\n**Deferred at phase start**\n\n" + "\n".join(f"- {u}: {r}" for u, r in plan.deferred_now)
    return text


def build_phase_plan(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(name="phase_plan", partitions_def=partitions, group_name="day", kinds={"duckdb"},
              deps=["conversations", "self_model"], pool="cass_store",
              description="The agent's own plan for one phase (the first phase of a day plans the whole day).")
    def phase_plan(context: dg.AssetExecutionContext, config: PlanConfig, cass: CassResource) -> dg.MaterializeResult:
        rt, clock = cass.for_run(context), cass.clock()
        day_s, phase = split_key(context.partition_key)
        day = date.fromisoformat(day_s)
        llm = metered(rt, clock, MeterContext(date=day, phase=phase, category="system", priority="high",
                                              work_unit_id=None, action_id=PLAN_ACTION_ID, run_id=context.run_id,
                                              may_use_reserve=True))
        try:
            plan = plan_phase(rt, llm, day, phase, clock.now(), replan=config.replan,
                              owner=Owner.here(context.run_id), is_run_over=run_over(context.instance))
        except UnplannedWhilePaused as exc:
            raise dg.Failure(str(exc)) from None
        failpoint("phase_planned")   # reliability tests: a crash between the plan and the first action
        if plan.error:
            context.log.warning(f"the agent's plan was not used ({plan.error}); fallback scorer planned the day")
        context.log.info(f"{day_s} {phase}: {len(plan.units)} unit(s), source {plan.source}, "
                         f"revision {plan.revision}{' (planned now)' if plan.planned_now else ''}")
        runnable = [u for u in plan.units if not UnitStatus(u["status"]).final]
        return dg.MaterializeResult(metadata={
            "plan": dg.MetadataValue.md(plan_markdown(plan)),
            "day_intention": plan.day_intention,
            "source": plan.source,
            "revision": plan.revision,
            "planned_now": plan.planned_now,
            "units": len(plan.units),
            "runnable_units": len(runnable),
            "dropped": len(plan.dropped),
            "deferred_at_start": len(plan.deferred_now),
            "estimated_cost_usd": usd(sum(u["estimated_cost_usd"] for u in runnable)),
        })

    return phase_plan
