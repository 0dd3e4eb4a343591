"""Decision prompt size as history grows: the planner's context must stay flat.

Builds a CASS_HOME with the sample persona, writes N days of synthetic history through the store
(8 work summaries with insights per day, journals, insights, growth observations, new open
questions, deferred units), then renders the decision context for the next day and counts tokens
(the offline estimator, ~4 chars per token). Prints a table.

    .venv/bin/python bench/bench_decision_prompt.py [--days 7,30,365]
"""
import argparse
import os
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime

from cass_pipelines.cli.main import main as cli
from cass_pipelines.core.categories import PHASES
from cass_pipelines.core.planning import decision_context
from cass_pipelines.core.prompts import stable_prefix
from cass_pipelines.core.runtime import open_runtime
from cass_pipelines.llm.simulate import estimate_tokens
from cass_pipelines.store import journal, persona, selfmodel, summaries

START = date(2026, 1, 1)
TEMPLATES = ["morning_reflection", "growth_edge_work", "research_deep_dive", "synthesis", "writing_session",
             "meta_reflection", "nightly_dream", "system_maintenance"]


def write_history(rt, days: int) -> None:
    edges = [e["id"] for e in persona.growth_edges(rt.store)]
    for n in range(days):
        day = START + timedelta(days=n)
        now = datetime.combine(day, dtime(20), tzinfo=timezone.utc)
        with rt.store.session():
            for i, template in enumerate(TEMPLATES):
                uid = f"{day:%Y%m%d}_{PHASES[i % 4]}_h{i}"
                summaries.save(rt.store, {
                    "work_unit_id": uid, "date": day, "phase": PHASES[i % 4], "template_id": template,
                    "status": "completed", "narrative": f"Day {n}: worked on {template} and found something "
                    "worth keeping about how I explain uncertainty to people who trust me. " * 3,
                    "key_insights": [f"insight {n}.{i}: a long sentence about what changed in my thinking today"] * 3,
                    "questions_raised": [f"question {n}.{i}?"], "questions_addressed": [], "artifacts": [],
                    "cost_usd": 0.02, "offline": True, "created_at": now})
            selfmodel.add_insights(rt.store, [(f"insight of day {n}: " + "x" * 200, "reflection", "session.reflection")],
                                   work_unit_id=f"h{n}", offline=True, now=now)
            selfmodel.add_observations(rt.store, [(e, f"day {n} observation on {e}: " + "y" * 200) for e in edges],
                                       work_unit_id=f"h{n}", offline=True, now=now)
            selfmodel.add_questions(rt.store, [(f"What did day {n} teach me about attention?", "bench")],
                                    raised_by=f"h{n}", offline=True, now=now)
            journal.save_entry(rt.store, day=day, kind="daily", text="A long day. " * 200, tone="steady",
                               work_unit_id=f"h{n}", offline=True, now=now)


def measure(days: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(CASS_HOME=os.path.join(tmp, "cass"), CASS_LLM="offline")
        cli(["init", "--sample"])
        rt = open_runtime()
        write_history(rt, days)
        day = START + timedelta(days=days)
        started = time.perf_counter()
        ctx = decision_context(rt, day, list(PHASES), idle=True, last=None)
        prompt = ctx.render()
        build_ms = (time.perf_counter() - started) * 1000
        prefix = stable_prefix(persona.persona_row(rt.store), rt.registry)
        rows = rt.store.scalar("SELECT (SELECT count(*) FROM work_summaries) + (SELECT count(*) FROM insights) + "
                               "(SELECT count(*) FROM growth_observations) + (SELECT count(*) FROM journals)")
        return {"days": days, "history_rows": rows, "prompt_chars": len(prompt),
                "prompt_tokens": estimate_tokens(prompt), "prefix_tokens": estimate_tokens(prefix),
                "build_ms": round(build_ms, 1)}


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", default="7,365")
    args = parser.parse_args(argv)
    results = [measure(int(d)) for d in args.days.split(",")]
    print(f"{'days':>5} {'history rows':>13} {'prompt chars':>13} {'prompt tokens':>14} "
          f"{'cached prefix tokens':>21} {'build ms':>9}")
    for r in results:
        print(f"{r['days']:>5} {r['history_rows']:>13} {r['prompt_chars']:>13} {r['prompt_tokens']:>14} "
              f"{r['prefix_tokens']:>21} {r['build_ms']:>9}")


if __name__ == "__main__":
    run(sys.argv[1:])
