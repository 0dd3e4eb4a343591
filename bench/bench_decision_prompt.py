"""The decision request as history grows: what the planner sends must stay flat.

Builds a CASS_HOME with the sample persona, fills N days of every history table (bench/history.py:
work units and action runs, summaries, day plans and drops, phase openings, insights, observations,
open questions, journals, wiki notes, documents, research, conversations and messages and their
summaries, ledger and reservations, alerts, dead letters, goals, their links, progress notes and
weekly intentions), then builds the next day's decision exactly as `make_day_plan` does (the week's
intention and goals, yesterday's threads and the learning digest "what has worked for me lately"
included) and captures the request the LLM client receives. Counts the
whole request: system prefix + system suffix + prompt + the output schema (offline estimator,
~4 characters a token, and the reservation's byte bound). Prints JSON.

    .venv/bin/python bench/bench_decision_prompt.py [--days 7,365]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from history import fill  # noqa: E402

from cass_pipelines.cli.main import main as cli  # noqa: E402
from cass_pipelines.domain.budget_rules import prompt_tokens_bound  # noqa: E402
from cass_pipelines.domain.categories import PHASES  # noqa: E402
from cass_pipelines.llm.base import LLMError  # noqa: E402
from cass_pipelines.llm.simulate import estimate_tokens  # noqa: E402
from cass_pipelines.services.decision import DECISION_TIERS, decide  # noqa: E402
from cass_pipelines.services.planning import decision_context  # noqa: E402
from cass_pipelines.services.prompts import stable_prefix  # noqa: E402
from cass_pipelines.services.runtime import open_runtime  # noqa: E402
from cass_pipelines.store import persona  # noqa: E402

START = date(2026, 1, 1)


class CapturingLLM:
    """Records the one request the decision makes, then fails it as a failed call would (decide falls
    back; nothing is paid)."""
    mode = "offline"

    def __init__(self):
        self.request, self.schema = None, None

    def model_for(self, tier: str) -> str:
        return "claude-sonnet-5-5"

    def structured(self, request, schema):
        self.request, self.schema = request, json.dumps(schema.model_json_schema())
        raise LLMError("captured by the bench")

    def text(self, request):
        raise AssertionError("the decision asks for structured output")


def measure(days: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(CASS_HOME=os.path.join(tmp, "cass"), CASS_LLM="offline")
        os.environ.pop("CASS_ACTIONS_FILE", None)
        with contextlib.redirect_stdout(sys.stderr):   # stdout carries only the JSON figures
            assert cli(["init", "--sample"]) == 0
        rt = open_runtime()
        rows = fill(rt.settings.db_path, START, days)
        day = START + timedelta(days=days)
        llm = CapturingLLM()
        started = time.perf_counter()
        ctx = decision_context(rt, day, list(PHASES), idle=True, last=None,
                           now=datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc))
        prefix = stable_prefix(persona.persona_row(rt.store), rt.registry)
        decide(llm, {tier: prefix for tier in DECISION_TIERS}, ctx)
        build_ms = (time.perf_counter() - started) * 1000
        r = llm.request
        assert r is not None and ctx.week is not None, "the decision made no request, or saw no week"
        parts = {"system_prefix": r.system_prefix, "system_suffix": r.system_suffix, "prompt": r.prompt,
                 "schema": llm.schema}
        history = {t: n for t, n in rows.items() if t not in ("schema_version", "persona", "growth_edges",
                                                                "control_flags")}
        return {"days": days, "history_rows": sum(history.values()), "history_tables_filled": len(
                    [n for n in history.values() if n]), "history_tables": len(history),
                "tokens": {k: estimate_tokens(v) for k, v in parts.items()},
                "request_tokens": sum(estimate_tokens(v) for v in parts.values()),
                "request_tokens_bound": prompt_tokens_bound(*parts.values()),
                "request_chars": sum(len(v) for v in parts.values()), "build_ms": round(build_ms, 1),
                # The week's part (issue 15): intention, goals with progress, threads, the learning digest.
                "week_section_tokens": estimate_tokens(ctx.week.render()), "goals_shown": len(ctx.week.goals),
                "threads_shown": len(ctx.week.threads), "digest": ctx.week.digest}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", default="7,365")
    args = parser.parse_args(argv)
    results = [measure(int(d)) for d in args.days.split(",")]
    out = {"bench": "decision_request", "results": results}
    if len(results) > 1:
        out["growth_last_over_first"] = round(results[-1]["request_tokens"] / results[0]["request_tokens"], 3)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
