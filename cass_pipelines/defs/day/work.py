"""`phase_work` (date|phase): one Dagster step per executed action, and no other step per action.

Dagster has no nested dynamic mapping, so a unit's actions run as a chain inside one mapping:
`start_phase_work` puts each unit that still has work into the group of its remaining length n
(dynamic output `left_n`), and group n maps every unit to the chain `action_1_of_n` → … →
`action_n_of_n`, which runs its actions in template order. An empty group has no steps, and
nothing runs between actions: a phase is start, its action steps, finish. Steps pass no values
(their unit is their mapping key), so Dagster pickles nothing and logs no inputs or outputs.

Handler failures are data (the step records them and the unit is failed), because Dagster skips a
collect step when any mapped step fails: the phase must still be summarised and costed. The
failure shows in the UI through the `actions_succeeded` check.
"""

from datetime import date
from functools import cache

import dagster as dg

from cass_pipelines.defs.partitions import split_key
from cass_pipelines.defs.resources import CassResource, run_over
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.domain.states import ActionStatus, UnitStatus
from cass_pipelines.services.logs import unit_extra
from cass_pipelines.services.runner import StepOutcome, next_position, run_action
from cass_pipelines.store import plans


def mapping_key(unit_id: str, template_id: str) -> str:
    return f"{unit_id}__{template_id}"


def unit_of(key: str) -> tuple[str, str]:
    """(unit id, template id) of a mapping key; a unit id never holds "__" (see plans.unit_id)."""
    unit_id, template_id = key.split("__", 1)
    return unit_id, template_id


def unit_groups(max_length: int) -> dict[str, dg.DynamicOut]:
    """The outputs of a start op: one dynamic output per remaining length (an empty one maps to no step).
    They carry no value: a step knows its unit from its mapping key and its action from its place."""
    return {f"left_{n}": dg.DynamicOut(dg.Nothing) for n in range(1, max_length + 1)}


def emit_units(rt, units: list[dict]):
    """Each unit that has work left, as a step of the group of its remaining length."""
    for unit in sorted(units, key=lambda u: u["id"]):
        position = next_position(rt, unit)
        if position is not None:
            left = len(rt.registry.templates[unit["template_id"]].action_sequence) - position
            yield dg.DynamicOutput(None, output_name=f"left_{left}",
                                   mapping_key=mapping_key(unit["id"], unit["template_id"]))


# A job whose runs charge their actions to the budget day they run on, not their unit's date (approved work,
# run when a person decides, often a day later): tags={BUDGET_DAY_TAG: RUN_DAY}.
BUDGET_DAY_TAG, RUN_DAY = "cass/budget_day", "run_day"


@cache   # one definition per name: phase_job and manual_work_job share them
def action_op(k: int, n: int) -> dg.OpDefinition:
    """The step that runs the k-th of the n actions a unit had left when the phase started. It waits
    for the (k-1)-th; data passes through the store only, so Dagster stores no input or output."""
    @dg.op(name=f"action_{k}_of_{n}", ins={"after": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing),
           tags={"kind": "action"}, pool="cass_store")
    def run_work_action(context: dg.OpExecutionContext, cass: CassResource) -> None:
        rt = cass.for_run(context)
        unit_id, template_id = unit_of(context.get_mapping_key() or "")
        position = len(rt.registry.templates[template_id].action_sequence) - n + k - 1
        clock = cass.clock()
        budget = phase_at(clock.now(), rt.settings) if context.run.tags.get(BUDGET_DAY_TAG) == RUN_DAY else None
        outcome: StepOutcome = run_action(rt, unit_id, position, clock, run_id=context.run_id,
                                          step_key=context.get_step_execution_context().step.key,
                                          log=context.log.debug, is_run_over=run_over(context.instance),
                                          budget=budget)
        log = context.log.error if outcome.status is ActionStatus.FAILED else context.log.info
        log(f"{outcome.action_id} {outcome.status}: {outcome.message[:300]} (${outcome.cost_usd:.4f})",
            extra=unit_extra(unit_id, outcome.action_id))

    return run_work_action


def action_chains(groups, max_length: int) -> dict:
    """Map each group `left_n` to its chain of n action steps; returns the finish op's `after_n` inputs.
    A unit that stopped early (failed, deferred, abort_sequence) makes its later steps return at once."""
    ends = {}
    for n in range(1, max_length + 1):
        chain = [action_op(k, n) for k in range(1, n + 1)]

        def run_chain(start, chain=chain):
            for op in chain:
                start = op(start)
            return start
        ends[f"after_{n}"] = getattr(groups, f"left_{n}").map(run_chain).collect()
    return ends


def after_chains(max_length: int) -> dict[str, dg.In]:
    """A finish op's inputs: it waits for every chain."""
    return {f"after_{n}": dg.In(dg.Nothing) for n in range(1, max_length + 1)}


def phase_outcome(units: list[dict]) -> dict:
    counts: dict[str, int] = {}
    for u in units:
        counts[u["status"]] = counts.get(u["status"], 0) + 1
    return {"units": len(units), **counts,
            "failed_units": [f"{u['id']}: {u['error']}" for u in units if u["status"] == UnitStatus.FAILED]}


def build_phase_work(partitions: dg.PartitionsDefinition, max_length: int) -> dg.AssetsDefinition:
    @dg.op(name="start_phase_work", ins={"plan": dg.In(dg.Nothing)}, out=unit_groups(max_length), pool="cass_store")
    def start_phase_work(context: dg.OpExecutionContext, cass: CassResource):
        """Units of the partition that still have actions to run (a re-run resumes, never repeats)."""
        rt = cass.for_run(context)
        day, phase = split_key(context.partition_key)
        with rt.store.session():
            steps = list(emit_units(rt, plans.units_for_phase(rt.store, date.fromisoformat(day), phase)))
        context.log.info(f"{day} {phase}: {len(steps)} unit(s) to run")
        yield from steps

    @dg.op(name="finish_phase_work", ins=after_chains(max_length), out=dg.Out(dg.Nothing), pool="cass_store")
    def finish_phase_work(context: dg.OpExecutionContext, cass: CassResource):
        rt = cass.for_run(context)
        day, phase = split_key(context.partition_key)
        units = plans.units_for_phase(rt.store, date.fromisoformat(day), phase)
        result = phase_outcome(units)
        table = "\n".join(["| unit | template | status | note |", "|---|---|---|---|"] + [
            f"| {u['id']} | {u['template_id']} | {u['status']} | {(u['error'] or u['reason'] or '')[:120]} |"
            for u in units])
        context.add_output_metadata({
            "units": result["units"], "completed": result.get("completed", 0), "failed": result.get("failed", 0),
            "deferred": result.get("deferred", 0), "work": dg.MetadataValue.md(table)})

    @dg.graph(name="phase_work_graph")
    def graph(plan):
        return finish_phase_work(**action_chains(start_phase_work(plan), max_length))

    return dg.AssetsDefinition.from_graph(
        graph, keys_by_input_name={"plan": dg.AssetKey("phase_plan")},
        keys_by_output_name={"result": dg.AssetKey("phase_work")}, partitions_def=partitions,
        group_name="day",
        descriptions_by_output_name={"result": "The phase's work: one step per (work unit, action)."})


def build_actions_check(partitions: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset="phase_work", name="actions_succeeded", blocking=False, partitions_def=partitions,
                    description="Every action of the partition's units succeeded (failures are recorded, not raised).")
    def actions_succeeded(context: dg.AssetCheckExecutionContext, cass: CassResource) -> dg.AssetCheckResult:
        day, phase = split_key(context.partition_key)
        result = phase_outcome(plans.units_for_phase(cass.runtime().store, date.fromisoformat(day), phase))
        return dg.AssetCheckResult(passed=not result["failed_units"], severity=dg.AssetCheckSeverity.ERROR,
                                   metadata={"failed_units": len(result["failed_units"]),
                                             "failures": dg.MetadataValue.md("\n".join(
                                                 f"- {f}" for f in result["failed_units"]) or "none")})

    return actions_succeeded
