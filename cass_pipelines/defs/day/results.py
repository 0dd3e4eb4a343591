"""`work_summaries` and `cost_records` (date|phase): what the phase's work amounted to and cost; the
cost_records step evaluates the checks on it too (defs/budget/checks.py)."""

from datetime import date

import dagster as dg

from cass_pipelines.defs import usd
from cass_pipelines.defs.budget.checks import cost_check_results, cost_check_specs
from cass_pipelines.defs.partitions import split_key
from cass_pipelines.defs.resources import CassResource, run_over
from cass_pipelines.services.runner import summarize_all
from cass_pipelines.services.runtime import Runtime
from cass_pipelines.services.summaries import summary_markdown
from cass_pipelines.store import ledger, plans


def build_results(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(name="work_summaries", partitions_def=partitions, group_name="day", kinds={"duckdb"},
              deps=["phase_work"], pool="cass_store",
              description="One summary per finished unit: narrative, insights, questions, artifacts, cost.")
    def work_summaries(context: dg.AssetExecutionContext, cass: CassResource) -> dg.MaterializeResult:
        rt, clock = cass.for_run(context), cass.clock()
        day_s, phase = split_key(context.partition_key)
        # Units of planned and manual work; a job's own unit (journal, memory) is its own account.
        units = [u for u in plans.units_for_phase(rt.store, date.fromisoformat(day_s), phase) if u["origin"] != "job"]
        made = summarize_all(rt, units, clock, context.run_id, run_over(context.instance))
        return dg.MaterializeResult(metadata={
            "summaries": len(made),
            "insights": sum(len(s.get("key_insights") or []) for s in made),
            "summaries_md": dg.MetadataValue.md("\n\n---\n\n".join(summary_markdown(s) for s in made) or "none"),
        })

    @dg.multi_asset(name="cost_records", partitions_def=partitions, can_subset=True, pool="cass_store",
                    specs=[dg.AssetSpec("cost_records", deps=["phase_work", "work_summaries"], group_name="day",
                                        kinds={"duckdb"},
                                        description="Every LLM call of the partition from the ledger: tokens by "
                                                    "kind and dollars.")],
                    check_specs=cost_check_specs(partitions))
    def cost_records(context: dg.AssetExecutionContext, cass: CassResource):
        """The partition's costs and the checks on them, in one step and one open (either may run alone)."""
        rt = cass.runtime()
        day_s, phase = split_key(context.partition_key)
        day = date.fromisoformat(day_s)
        with rt.store.session():
            results: list[dg.MaterializeResult | dg.AssetCheckResult] = (
                [cost_result(rt, day, phase)] if dg.AssetKey("cost_records") in context.selected_asset_keys else [])
            results += cost_check_results(rt, day_s, phase, {k.name for k in context.selected_asset_check_keys})
        yield from results

    return [work_summaries, cost_records]


def cost_result(rt: Runtime, day: date, phase: str) -> dg.MaterializeResult:
    costs = ledger.totals(rt.store, day, phase=phase)
    rows = ledger.breakdown(rt.store, day, phase)
    table = "\n".join(["| category | model | action | calls | cost | input tok | output tok |",
                       "|---|---|---|---|---|---|---|"] + [
        f"| {r['category']} | {r['model']} | {r['action_id']} | {r['calls']} | ${r['cost_usd']:.4f} | "
        f"{r['input_tokens']} | {r['output_tokens']} |" for r in rows])
    return dg.MaterializeResult(asset_key="cost_records", metadata={
        "cost_usd": usd(costs["cost_usd"]),
        "calls": int(costs["calls"]), "input_tokens": int(costs["input_tokens"]),
        "output_tokens": int(costs["output_tokens"]),
        "cache_read_input_tokens": int(costs["cache_read_input_tokens"]),
        "cache_creation_input_tokens": int(costs["cache_creation_input_tokens"]),
        "offline": bool(costs["offline"]), "breakdown": dg.MetadataValue.md(table)})
