"""`daily_journal` (date): a job unit run through the same runner as planned work (metered, ledgered and
recorded the same way)."""

from datetime import date

import dagster as dg

from cass_pipelines.defs import usd
from cass_pipelines.defs.resources import CassResource, run_over
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.domain.registry import JOURNAL_TEMPLATE
from cass_pipelines.domain.states import UnitStatus
from cass_pipelines.services.runner import job_unit, run_unit
from cass_pipelines.services.watches import JOURNAL_TAG
from cass_pipelines.store import plans
from cass_pipelines.store.budget import refused_money
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
        tag = JOURNAL_TAG if not config.rewrite else f"{JOURNAL_TAG}_{clock.now():%H%M%S}"
        uid = plans.unit_id(day, "night", tag)
        earlier = plans.get_unit(rt.store, uid) or {}
        # A journal its own day could not pay for is written later on the budget of the day it runs (a pause
        # or its batch's wait in between changes nothing), funded as night work still (batched). One only a
        # pause or its batch's wait deferred is its own day's.
        short = earlier.get("status") == UnitStatus.DEFERRED and refused_money(rt.store, uid, day)
        job_unit(rt, day, "night", JOURNAL_TEMPLATE, tag, f"the day {day}", clock.now())
        today = phase_at(clock.now(), rt.settings)[0]
        outcomes = run_unit(rt, uid, clock, run_id=context.run_id, log=context.log.debug,
                            is_run_over=run_over(context.instance),
                            budget=(max(today, day), "night") if short else None)
        unit = plans.get_unit(rt.store, uid)
        if unit["status"] == UnitStatus.FAILED:
            raise dg.Failure(f"journal for {day} failed: {unit['error']}")
        entry = journal_entry(rt.store, day) or {}
        return dg.MaterializeResult(metadata={
            "status": unit["status"], "reason": unit["reason"] or "",
            # (a pause, the budget or its batch deferred it: run-day's report says it waits, and why)
            **({"waits": unit["reason"] or ""} if unit["status"] == UnitStatus.DEFERRED else {}),
            "cost_usd": usd(sum(o.cost_usd for o in outcomes)),
            "offline": bool(entry.get("offline")), "tone": entry.get("tone") or "",
            "entry": dg.MetadataValue.md(entry.get("text") or f"_no entry ({unit['status']}: {unit['reason']})_"),
            "where": f"DuckDB {rt.settings.db_path} table journals (date={day}, kind=daily)"})

    return daily_journal
