"""`daily_journal` (date) and `conversation_summaries`: work run by its own job, one unit each,
through the same runner as planned work (so it is metered, ledgered and recorded the same way)."""

from datetime import date

import dagster as dg

from cass_pipelines.assets import usd
from cass_pipelines.core.phases import phase_at
from cass_pipelines.core.runner import job_unit, run_unit
from cass_pipelines.resources import CassResource, run_over
from cass_pipelines.store import plans
from cass_pipelines.store.views import journal_entry


class JournalConfig(dg.Config):
    rewrite: bool = False  # write the entry again even if the day already has one


def build_daily_journal(date_partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(name="daily_journal", partitions_def=date_partitions, group_name="day", kinds={"duckdb"},
              deps=[*(dg.AssetDep(name, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(
                  partition_dimension_name="date")) for name in ("work_summaries", "cost_records")),
                  "conversation_summaries"], pool="cass_store",
              description="The agent's journal entry for the day, from its conversations and work summaries.")
    def daily_journal(context: dg.AssetExecutionContext, config: JournalConfig,
                      cass: CassResource) -> dg.MaterializeResult:
        rt, clock = cass.for_run(context), cass.clock()
        day = date.fromisoformat(context.partition_key)
        tag = "journal" if not config.rewrite else f"journal_{clock.now():%H%M%S}"
        deferred = (plans.get_unit(rt.store, plans.unit_id(day, "night", tag)) or {}).get("status") == "deferred"
        uid = job_unit(rt, day, "night", "daily_journal", tag, f"the day {day}", clock.now())
        # A journal its own day could not pay for is written later on the budget of the day it runs.
        today = phase_at(clock.now(), rt.settings)[0]
        outcomes = run_unit(rt, uid, clock, run_id=context.run_id, log=context.log.warning,
                            is_run_over=run_over(context.instance), budget_day=max(today, day) if deferred else None)
        unit = plans.get_unit(rt.store, uid)
        if unit["status"] == "failed":
            raise dg.Failure(f"journal for {day} failed: {unit['error']}")
        entry = journal_entry(rt.store, day) or {}
        return dg.MaterializeResult(metadata={
            "status": unit["status"], "reason": unit["reason"] or "",
            "cost_usd": usd(sum(o.cost_usd for o in outcomes)),
            "offline": bool(entry.get("offline")), "tone": entry.get("tone") or "",
            "entry": dg.MetadataValue.md(entry.get("text") or f"_no entry ({unit['status']}: {unit['reason']})_"),
            "where": f"DuckDB {rt.settings.db_path} table journals (date={day}, kind=daily)"})

    return daily_journal


def build_conversation_summaries() -> dg.AssetsDefinition:
    @dg.asset(name="conversation_summaries", group_name="memory", kinds={"duckdb"}, deps=["conversations"],
              pool="cass_store",
              description="Incremental summaries and titles of conversations that went idle.")
    def conversation_summaries(context: dg.AssetExecutionContext, cass: CassResource) -> dg.MaterializeResult:
        rt, clock = cass.for_run(context), cass.clock()
        now = clock.now()
        day, phase = phase_at(now, rt.settings)
        # At most one catch-up unit waits at a time: a refused one is taken up again, not doubled.
        waiting = plans.pending_job_unit(rt.store, "conversation_catchup")
        uid = waiting["id"] if waiting else job_unit(rt, day, phase, "conversation_catchup", f"mem{now:%H%M%S%f}",
                                                     "idle conversations", now)
        plans.reopen_units(rt.store, [uid])
        outcomes = run_unit(rt, uid, clock, run_id=context.run_id, log=context.log.warning,
                            is_run_over=run_over(context.instance), budget_day=day)
        unit = plans.get_unit(rt.store, uid)
        if unit["status"] == "failed":
            raise dg.Failure(f"memory summarisation failed: {unit['error']}")
        return dg.MaterializeResult(metadata={
            "status": unit["status"], "actions": len(outcomes),
            "cost_usd": usd(sum(o.cost_usd for o in outcomes)),
            "messages": dg.MetadataValue.md("\n".join(f"- {o.action_id}: {o.message}" for o in outcomes) or "none"),
            "where": f"DuckDB {rt.settings.db_path} table conversation_summaries"})

    return conversation_summaries
