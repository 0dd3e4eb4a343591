"""`conversation_summaries`: incremental summaries of idle conversations, one catch-up unit through the
same runner as planned work."""
import dagster as dg

from cass_pipelines.defs import usd
from cass_pipelines.defs.resources import CassResource, run_over
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.domain.registry import CATCHUP_TEMPLATE
from cass_pipelines.domain.states import UnitStatus
from cass_pipelines.services.handlers.memory import catchup_has_work, waiting_catchup
from cass_pipelines.services.runner import job_unit, run_unit
from cass_pipelines.store import plans


def build_conversation_summaries() -> dg.AssetsDefinition:
    @dg.asset(name="conversation_summaries", group_name="memory", kinds={"duckdb"}, deps=["conversations"],
              pool="cass_store",
              description="Incremental summaries and titles of conversations that went idle.")
    def conversation_summaries(context: dg.AssetExecutionContext, cass: CassResource) -> dg.MaterializeResult:
        rt, clock = cass.for_run(context), cass.clock()
        now = clock.now()
        day, phase = phase_at(now, rt.settings)
        with rt.store.session():
            # At most one catch-up unit waits at a time: a refused one is taken up again, not doubled.
            waiting = waiting_catchup(rt.store)
            if waiting is None and not catchup_has_work(rt.store, rt.settings, now):
                # Nothing new: no unit, no model call (the idle sensor and run-day launch this job freely).
                return dg.MaterializeResult(metadata={"status": "nothing to summarise", "actions": 0,
                                                      "cost_usd": usd(0.0)})
        uid = waiting["id"] if waiting else job_unit(rt, day, phase, CATCHUP_TEMPLATE, f"mem{now:%H%M%S%f}",
                                                     "idle conversations", now)
        plans.reopen_units(rt.store, [uid])
        outcomes = run_unit(rt, uid, clock, run_id=context.run_id, log=context.log.debug,
                            is_run_over=run_over(context.instance), budget=(day, phase))
        unit = plans.get_unit(rt.store, uid)
        if unit["status"] == UnitStatus.FAILED:
            raise dg.Failure(f"memory summarisation failed: {unit['error']}")
        return dg.MaterializeResult(metadata={
            "status": unit["status"], "actions": len(outcomes),
            "cost_usd": usd(sum(o.cost_usd for o in outcomes)),
            "messages": dg.MetadataValue.md("\n".join(f"- {o.action_id}: {o.message}" for o in outcomes) or "none"),
            "where": f"DuckDB {rt.settings.db_path} table conversation_summaries"})

    return conversation_summaries
