"""ledger: one row per LLM call of a budget day, with tokens by kind, cost and request id."""
from __future__ import annotations

import argparse

from cass_pipelines.cli.output import emit, parse_date, table
from cass_pipelines.domain.clock import clock_from_env
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.services.runtime import open_store
from cass_pipelines.store import ledger
from cass_pipelines.store.schema import migrate


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ledger", help="one row per LLM call: model, tokens by kind, cost, work unit, request id")
    p.add_argument("--date", help="YYYY-MM-DD (default: today in the agent's timezone)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ledger)


def cmd_ledger(args: argparse.Namespace) -> int:
    settings, store = open_store()
    day = parse_date(args.date, phase_at(clock_from_env().now(), settings)[0])
    with store.session():   # one open for the whole read
        migrate(store)
        rows = [{**row, "ts": row["ts"].astimezone(settings.tz)} for row in ledger.rows(store, day)]
        totals = None if args.json else (ledger.totals(store, day), ledger.totals_by(store, day, "category"))
    emit(rows, args.json, lambda rows: render(day, rows, *totals))
    return 0


def render(day, rows: list[dict], totals: dict, by_category: list[dict]) -> str:
    if not rows:
        return f"ledger {day}: no LLM calls"
    body = table([[r["ts"].strftime("%H:%M:%S"), r["phase"], r["work_unit_id"], r["action_id"], r["model"],
                   r["input_tokens"], r["output_tokens"], r["cache_creation_input_tokens"],
                   r["cache_read_input_tokens"], f"{r['cost_usd']:.5f}", r["attempts"], r["request_id"],
                   "offline" if r["offline"] else ""] for r in rows],
                 ["time", "phase", "unit", "action", "model", "in", "out", "cache_w", "cache_r", "usd", "tries",
                  "request id", ""])
    cached = totals["cache_read_input_tokens"]
    sent = totals["input_tokens"] + totals["cache_creation_input_tokens"] + cached
    head = (f"ledger {day}: {totals['calls']} calls, ${totals['cost_usd']:.4f}; input {sent} tokens "
            f"({cached / sent if sent else 0:.0%} read from cache), output {totals['output_tokens']} tokens")
    categories = ", ".join(f"{c['category']} ${c['cost_usd']:.4f}" for c in by_category)
    return "\n".join([head, body, "", f"by category: {categories}"])
