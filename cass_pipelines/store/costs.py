"""Cost reports from the ledger, per phase partition and per day."""
from __future__ import annotations

from datetime import date

from cass_pipelines.store.db import Store


def partition_costs(store: Store, day: date, phase: str) -> dict:
    """Totals and a per-(category, model, action) breakdown of one date|phase partition."""
    totals = store.one("""SELECT count(*) AS calls, coalesce(sum(cost_usd), 0) AS cost_usd,
            coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens,
            coalesce(sum(cache_creation_input_tokens), 0) AS cache_creation_input_tokens,
            coalesce(sum(cache_read_input_tokens), 0) AS cache_read_input_tokens,
            coalesce(bool_or(offline), FALSE) AS offline
        FROM llm_ledger WHERE date = ? AND phase = ?""", [day, phase]) or {}
    breakdown = store.all("""SELECT category, model, coalesce(action_id, '') AS action_id, count(*) AS calls,
            sum(cost_usd) AS cost_usd, sum(input_tokens + cache_creation_input_tokens + cache_read_input_tokens)
            AS input_tokens, sum(output_tokens) AS output_tokens
        FROM llm_ledger WHERE date = ? AND phase = ? GROUP BY ALL ORDER BY cost_usd DESC""", [day, phase])
    return {**totals, "breakdown": breakdown}


def run_costs(store: Store, run_id: str) -> dict:
    """LLM calls and dollars of one Dagster run."""
    return store.one("SELECT count(*) AS calls, coalesce(sum(cost_usd), 0) AS cost_usd FROM llm_ledger "
                     "WHERE run_id = ?", [run_id]) or {"calls": 0, "cost_usd": 0.0}
