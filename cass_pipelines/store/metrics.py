"""The figures `cass-pipelines metrics` exports, read in one short read-only session.

Counts per label set; the exporter turns them into Prometheus families. Money and tokens come from
the append-only ledger, so their totals only grow (Prometheus counters)."""
from __future__ import annotations

from datetime import date, datetime

from cass_pipelines.domain.batching import BatchState, UnusedAnswer
from cass_pipelines.domain.registry import SUMMARY_ACTION_ID
from cass_pipelines.domain.settings import Settings
from cass_pipelines.domain.states import FINAL_UNIT_STATUSES
from cass_pipelines.store.budget import budget_status
from cass_pipelines.store.db import Store

# Action durations (seconds): an offline action takes milliseconds, a model call seconds to minutes.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def work_units(store: Store, day: date | None = None) -> list[dict]:
    """Units by (status, category, template): of `day`, or of every day."""
    where, args = ("WHERE date = ?", [day]) if day else ("", [])
    return store.all(f"SELECT status, category, template_id, count(*) AS n FROM work_units {where} "
                     "GROUP BY ALL ORDER BY ALL", args)


def action_runs(store: Store) -> list[dict]:
    return store.all("SELECT action_id, status, count(*) AS n FROM action_runs GROUP BY ALL ORDER BY ALL")


def action_durations(store: Store) -> list[dict]:
    """Per action: finished executions, their summed seconds, and cumulative counts per bucket."""
    buckets = ", ".join(f"count(*) FILTER (WHERE s <= {b}) AS le_{i}" for i, b in enumerate(DURATION_BUCKETS))
    rows = store.all(f"""
        WITH d AS (SELECT action_id, epoch(finished_at) - epoch(started_at) AS s FROM action_runs
                   WHERE started_at IS NOT NULL AND finished_at IS NOT NULL)
        SELECT action_id, count(*) AS n, sum(s) AS total, {buckets} FROM d GROUP BY action_id ORDER BY action_id""")
    return [{"action_id": r["action_id"], "count": r["n"], "sum": float(r["total"] or 0.0),
             "buckets": [(b, r[f"le_{i}"]) for i, b in enumerate(DURATION_BUCKETS)]} for r in rows]


def ledger_totals(store: Store) -> list[dict]:
    """LLM calls, cost and tokens by (category, model, offline), over the whole ledger."""
    return store.all("""SELECT category, model, offline, count(*) AS calls, sum(cost_usd) AS cost_usd,
            sum(input_tokens) AS input, sum(output_tokens) AS output,
            sum(cache_creation_input_tokens) AS cache_creation, sum(cache_read_input_tokens) AS cache_read
        FROM llm_ledger GROUP BY ALL ORDER BY ALL""")


def dead_letters(store: Store) -> dict:
    return store.one("SELECT count(*) AS total, count(*) FILTER (WHERE NOT resolved) AS unresolved "
                     "FROM dead_letters") or {"total": 0, "unresolved": 0}


def batch_requests(store: Store) -> list[dict]:
    return store.all("SELECT state, count(*) AS n FROM llm_batches GROUP BY ALL ORDER BY ALL")


def unused_answers(store: Store) -> dict[str, dict]:
    """Batched answers paid for (collected, in the ledger) and not used yet: their count, cost and the end
    of the oldest one's batch, for answers whose work still waits for them (it resumes to take them:
    services.watches.batch_resumes) and for those abandoned (their unit ended, or was offered again as
    new work, without them)."""
    final = ", ".join(f"'{s}'" for s in FINAL_UNIT_STATUSES)
    rows = store.all(f"""SELECT coalesce(u.status IN ({final}) OR u.reoffered_as IS NOT NULL, FALSE)
               AND NOT (b.action_id = '{SUMMARY_ACTION_ID}' AND coalesce(s.awaiting_batch, FALSE)) AS abandoned,
               count(*) AS n, sum(l.cost_usd) AS usd, min(b.ended_at) AS oldest
        FROM llm_batches b JOIN llm_ledger l ON l.request_id = b.request_id
        LEFT JOIN work_units u ON u.id = b.work_unit_id LEFT JOIN work_summaries s ON s.work_unit_id = b.work_unit_id
        WHERE b.state = '{BatchState.COLLECTED}' AND NOT b.used GROUP BY ALL""")
    out: dict[str, dict] = {use: {"n": 0, "usd": 0.0, "oldest": None} for use in UnusedAnswer}
    for r in rows:
        use = UnusedAnswer.ABANDONED if r["abandoned"] else UnusedAnswer.WAITING
        out[use] = {"n": r["n"], "usd": float(r["usd"]), "oldest": r["oldest"]}
    return out


def latest_plan_at(store: Store, day: date) -> datetime | None:
    return store.scalar("SELECT max(created_at) FROM day_plans WHERE date = ?", [day])


def opened_phases(store: Store, day: date) -> set[str]:
    return {r["phase"] for r in store.all("SELECT phase FROM phase_openings WHERE date = ?", [day])}


def snapshot(store: Store, settings: Settings, day: date) -> dict:
    """Everything the exporter serves, from one connection (opened once, closed at the end)."""
    with store.session():
        return {"units_today": work_units(store, day), "units_all": work_units(store),
                "actions": action_runs(store), "durations": action_durations(store),
                "ledger": ledger_totals(store), "dead_letters": dead_letters(store),
                "budget": budget_status(store, settings, day), "plan_at": latest_plan_at(store, day),
                "opened_phases": opened_phases(store, day), "batches": batch_requests(store),
                "unused_answers": unused_answers(store)}
