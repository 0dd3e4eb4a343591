"""`phase_work` (date|phase): one Dagster step per (work unit, action).

Dagster has no nested dynamic mapping, so actions run in waves: wave k runs the k-th action of
every unit still going, which keeps each unit's actions in template order while units of a wave
fan out side by side. Handler failures are data (the step records them and the unit is failed),
because Dagster skips a collect step when any mapped step fails: the phase must still be
summarised and costed. The failure shows in the UI through the `actions_succeeded` check.
"""

from datetime import date

import dagster as dg

from cass_pipelines.core.categories import ActionStatus
from cass_pipelines.core.runner import StepOutcome, next_position, run_action
from cass_pipelines.partitions import split_key
from cass_pipelines.resources import CassResource, run_over
from cass_pipelines.store import plans


def mapping_key(unit_id: str, action_id: str) -> str:
    return f"{unit_id}__{action_id.replace('.', '_')}"


def _emit(rt, state: dict[str, int]):
    with rt.store.session():
        units = {uid: plans.get_unit(rt.store, uid) for uid in state}
    for unit_id, position in sorted(state.items()):
        action_id = rt.registry.templates[units[unit_id]["template_id"]].action_sequence[position]
        yield dg.DynamicOutput({"unit_id": unit_id, "position": position}, output_name="steps",
                               mapping_key=mapping_key(unit_id, action_id))


@dg.op(out={"state": dg.Out(dict), "steps": dg.DynamicOut(dict)})
def advance_wave(context: dg.OpExecutionContext, cass: CassResource, state: dict, outcomes: list[dict]):
    """The next action of every unit whose previous action did not end it."""
    done = {o["work_unit_id"] for o in outcomes if o["unit_done"]}
    nxt = {uid: pos + 1 for uid, pos in state.items() if uid not in done}
    yield dg.Output(nxt, output_name="state")
    yield from _emit(cass.for_run(context), nxt)


@dg.op(out=dg.Out(dict), tags={"kind": "action"})
def run_work_action(context: dg.OpExecutionContext, cass: CassResource, step: dict) -> dict:
    rt = cass.for_run(context)
    unit = plans.get_unit(rt.store, step["unit_id"])
    action_id = rt.registry.templates[unit["template_id"]].action_sequence[step["position"]]
    context.log.info(f"unit {step['unit_id']} ({unit['template_id']}: {unit['focus']}) "
                     f"action {step['position'] + 1}: {action_id}")
    outcome: StepOutcome = run_action(rt, step["unit_id"], step["position"], cass.clock(), run_id=context.run_id,
                                      step_key=context.get_step_execution_context().step.key,
                                      log=context.log.warning, is_run_over=run_over(context.instance))
    log = context.log.error if outcome.status is ActionStatus.FAILED else context.log.info
    log(f"{action_id} {outcome.status}: {outcome.message[:300]} (${outcome.cost_usd:.4f})")
    return outcome.as_dict()


def action_waves(state, steps, waves: int):
    """Compose the waves: wave 1 actions -> advance -> wave 2 actions -> ...; returns (state, outcomes)."""
    outcomes = steps.map(run_work_action.alias("action_1")).collect()
    for k in range(2, waves + 1):
        state, steps = advance_wave.alias(f"advance_to_action_{k}")(state, outcomes)
        outcomes = steps.map(run_work_action.alias(f"action_{k}")).collect()
    return state, outcomes


@dg.op(ins={"plan": dg.In(dg.Nothing)}, out={"state": dg.Out(dict), "steps": dg.DynamicOut(dict)})
def start_phase_work(context: dg.OpExecutionContext, cass: CassResource):
    """Units of the partition that still have actions to run (a re-run resumes, never repeats)."""
    rt = cass.for_run(context)
    day, phase = split_key(context.partition_key)
    state = {}
    with rt.store.session():
        for unit in plans.units_for_phase(rt.store, date.fromisoformat(day), phase):
            position = next_position(rt, unit)
            if position is not None:
                state[unit["id"]] = position
    context.log.info(f"{day} {phase}: {len(state)} unit(s) to run")
    yield dg.Output(state, output_name="state")
    yield from _emit(rt, state)


def phase_outcome(rt, day: date, phase: str) -> dict:
    units = plans.units_for_phase(rt.store, day, phase)
    counts: dict[str, int] = {}
    for u in units:
        counts[u["status"]] = counts.get(u["status"], 0) + 1
    return {"units": len(units), **counts,
            "failed_units": [f"{u['id']}: {u['error']}" for u in units if u["status"] == "failed"]}


@dg.op(out=dg.Out(dict))
def finish_phase_work(context: dg.OpExecutionContext, cass: CassResource, state: dict, outcomes: list[dict]):
    rt = cass.runtime()
    day, phase = split_key(context.partition_key)
    with rt.store.session():
        result = phase_outcome(rt, date.fromisoformat(day), phase)
        units = plans.units_for_phase(rt.store, date.fromisoformat(day), phase)
    table = "\n".join(["| unit | template | status | note |", "|---|---|---|---|"] + [
        f"| {u['id']} | {u['template_id']} | {u['status']} | {(u['error'] or u['reason'] or '')[:120]} |"
        for u in units])
    return dg.Output(result, metadata={
        "units": result["units"], "completed": result.get("completed", 0), "failed": result.get("failed", 0),
        "deferred": result.get("deferred", 0), "work": dg.MetadataValue.md(table)})


def build_phase_work(partitions: dg.PartitionsDefinition, waves: int) -> dg.AssetsDefinition:
    @dg.graph(name="phase_work_graph")
    def graph(plan):
        state, steps = start_phase_work(plan)
        return finish_phase_work(*action_waves(state, steps, waves))

    return dg.AssetsDefinition.from_graph(
        graph, keys_by_input_name={"plan": dg.AssetKey("phase_plan")},
        keys_by_output_name={"result": dg.AssetKey("phase_work")}, partitions_def=partitions,
        group_name="day",
        descriptions_by_output_name={"result": "The phase's work: one step per (work unit, action)."})


def build_actions_check() -> dg.AssetChecksDefinition:
    @dg.asset_check(asset="phase_work", name="actions_succeeded", blocking=False,
                    description="Every action of the partition's units succeeded (failures are recorded, not raised).")
    def actions_succeeded(context: dg.AssetCheckExecutionContext, cass: CassResource) -> dg.AssetCheckResult:
        day, phase = split_key(context.partition_key)
        result = phase_outcome(cass.runtime(), date.fromisoformat(day), phase)
        return dg.AssetCheckResult(passed=not result["failed_units"], severity=dg.AssetCheckSeverity.ERROR,
                                   metadata={"failed_units": len(result["failed_units"]),
                                             "failures": dg.MetadataValue.md("\n".join(
                                                 f"- {f}" for f in result["failed_units"]) or "none")})

    return actions_succeeded

