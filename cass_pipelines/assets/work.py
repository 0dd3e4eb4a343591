"""`phase_work` (date|phase): one Dagster step per executed action, and no other step per action.

Dagster has no nested dynamic mapping, so a unit's actions run as a chain inside one mapping:
`start_phase_work` puts each unit that still has work into the group of its remaining length n
(dynamic output `left_n`), and group n maps every unit to the chain `action_1_of_n` → … →
`action_n_of_n`, which runs its actions in template order. An empty group has no steps, and
nothing runs between actions: a phase is start, its action steps, finish. A unit that stops early
(failed, deferred, abort_sequence) hands that on, and its later steps return without any work.

Handler failures are data (the step records them and the unit is failed), because Dagster skips a
collect step when any mapped step fails: the phase must still be summarised and costed. The
failure shows in the UI through the `actions_succeeded` check.
"""

from datetime import date

import dagster as dg

from cass_pipelines.core.runner import StepOutcome, next_position, run_action
from cass_pipelines.partitions import split_key
from cass_pipelines.resources import CassResource
from cass_pipelines.store import plans


def mapping_key(unit_id: str, template_id: str) -> str:
    return f"{unit_id}__{template_id}"


def unit_groups(max_length: int) -> dict[str, dg.DynamicOut]:
    """The outputs of a start op: one dynamic output per remaining length (an empty one maps to no step)."""
    return {f"left_{n}": dg.DynamicOut(dict) for n in range(1, max_length + 1)}


def emit_units(rt, units: list[dict]):
    """Each unit that has work left, as a step of the group of its remaining length."""
    for unit in sorted(units, key=lambda u: u["id"]):
        position = next_position(rt, unit)
        if position is None:
            continue
        left = len(rt.registry.templates[unit["template_id"]].action_sequence) - position
        yield dg.DynamicOutput({"unit_id": unit["id"], "position": position, "done": False},
                               output_name=f"left_{left}", mapping_key=mapping_key(unit["id"], unit["template_id"]))


@dg.op(out=dg.Out(dict), tags={"kind": "action"})
def run_work_action(context: dg.OpExecutionContext, cass: CassResource, step: dict) -> dict:
    """One action of one unit; returns the unit's next step (done when the unit stopped)."""
    if step["done"]:
        return step
    outcome: StepOutcome = run_action(cass.runtime(), step["unit_id"], step["position"], cass.clock(),
                                      run_id=context.run_id,
                                      step_key=context.get_step_execution_context().step.key,
                                      log=context.log.warning)
    log = context.log.error if outcome.status == "failed" else context.log.info
    log(f"unit {step['unit_id']} action {step['position'] + 1} {outcome.action_id} {outcome.status}: "
        f"{outcome.message[:300]} (${outcome.cost_usd:.4f})")
    return {"unit_id": step["unit_id"], "position": step["position"] + 1, "done": outcome.unit_done}


def action_chains(groups, max_length: int) -> dict:
    """Map each group `left_n` to its chain of n action steps; returns the finish op's `after_n` inputs."""
    ends = {}
    for n in range(1, max_length + 1):
        def chain(step, n=n):
            for k in range(1, n + 1):
                step = run_work_action.alias(f"action_{k}_of_{n}")(step)
            return step
        ends[f"after_{n}"] = getattr(groups, f"left_{n}").map(chain).collect()
    return ends


def after_chains(max_length: int) -> dict[str, dg.In]:
    """A finish op's inputs: it waits for every chain and loads none of their outputs."""
    return {f"after_{n}": dg.In(dg.Nothing) for n in range(1, max_length + 1)}


def phase_outcome(units: list[dict]) -> dict:
    counts: dict[str, int] = {}
    for u in units:
        counts[u["status"]] = counts.get(u["status"], 0) + 1
    return {"units": len(units), **counts,
            "failed_units": [f"{u['id']}: {u['error']}" for u in units if u["status"] == "failed"]}


def build_phase_work(partitions: dg.PartitionsDefinition, max_length: int) -> dg.AssetsDefinition:
    @dg.op(name="start_phase_work", ins={"plan": dg.In(dg.Nothing)}, out=unit_groups(max_length))
    def start_phase_work(context: dg.OpExecutionContext, cass: CassResource):
        """Units of the partition that still have actions to run (a re-run resumes, never repeats)."""
        rt = cass.runtime()
        day, phase = split_key(context.partition_key)
        with rt.store.session():
            steps = list(emit_units(rt, plans.units_for_phase(rt.store, date.fromisoformat(day), phase)))
        context.log.info(f"{day} {phase}: {len(steps)} unit(s) to run")
        yield from steps

    @dg.op(name="finish_phase_work", ins=after_chains(max_length), out=dg.Out(dg.Nothing))
    def finish_phase_work(context: dg.OpExecutionContext, cass: CassResource):
        rt = cass.runtime()
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
