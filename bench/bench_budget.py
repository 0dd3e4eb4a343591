"""How well the budget is spent: small days plan and work, bigger days use their money, holds
stay close to bills, and caching pays. Each scenario runs `cass-pipelines run-day` for the sample
persona in a throw-away CASS_HOME with the real anthropic SDK pointed at the loopback Messages API
(tests/fake_anthropic.py: bills the usage it simulates, prompt caching and minimum cacheable
lengths included, and counts tokens on /v1/messages/count_tokens), then reads the store.

- tiny:    a $0.05 day then the next day: plan source, units completed, spend, what was deferred
           (with reasons) and whether it was offered again the next day.
- tight:   two $0.30 days, measured on the second (estimates calibrated, the first day's deferred work
           waiting), whose plan holds more work than money: up to 8 units a phase of every plannable
           template the phase allows (the agent alone plans about $0.16 of work a day, too little to
           test the precondition); utilisation = spent / (limit - reserve), overspend, categories within
           their shares (beyond them only pooled room / the reserve).
- sample:  a $5.00 day after a first one (so output bounds come from measured history; the first
           day's figures are shown too): median reservation / bill over its calls, breaches, the
           cache-read share, and its cost as billed (caching and batches) against the same calls with
           caching only and uncached and unbatched, at list prices.

Usage: .venv/bin/python bench/bench_budget.py [--date 2026-11-20] [--only tiny,tight,sample]
Prints JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_anthropic import API_KEY, FakeAnthropic  # noqa: E402

from cass_pipelines.cli.main import main as cli  # noqa: E402
from cass_pipelines.config.registry import load_registry  # noqa: E402
from cass_pipelines.config.settings import load_settings  # noqa: E402
from cass_pipelines.domain.categories import PHASES  # noqa: E402
from cass_pipelines.domain.pauses import LookBacks  # noqa: E402
from cass_pipelines.domain.plan_rules import PlannedUnit  # noqa: E402
from cass_pipelines.llm.base import Usage  # noqa: E402
from cass_pipelines.llm.pricing import load_pricing  # noqa: E402
from cass_pipelines.store import ledger, plans  # noqa: E402
from cass_pipelines.store.budget import budget_status  # noqa: E402
from cass_pipelines.store.db import Store  # noqa: E402


@contextlib.contextmanager
def home(budget: float, max_units_per_phase: int | None = None):
    """A fresh CASS_HOME with the sample persona, the SDK pointed at a loopback API."""
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic(seed=0, lifetime_s=1800) as server:
        saved = dict(os.environ)
        os.environ.update({"CASS_HOME": f"{tmp}/cass", "DAGSTER_HOME": f"{tmp}/dagster", "CASS_LLM": "anthropic",
                           "ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": API_KEY,
                           "CASS_DAILY_BUDGET_USD": str(budget)})
        Path(f"{tmp}/dagster").mkdir()
        try:
            quiet(["init", "--sample"])
            if max_units_per_phase is not None:
                toml = Path(f"{tmp}/cass/cass.toml")
                toml.write_text(re.sub(r"(?m)^max_units_per_phase = \d+", f"max_units_per_phase = {max_units_per_phase}",
                                       toml.read_text(encoding="utf-8")), encoding="utf-8")
            settings = load_settings()
            yield settings, Store(settings.db_path), server
        finally:
            os.environ.clear()
            os.environ.update(saved)


def quiet(argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return cli(argv)


def run_day(day: date) -> tuple[int, float]:
    started = time.perf_counter()
    code = quiet(["run-day", "--date", day.isoformat()])
    return code, round(time.perf_counter() - started, 1)


def units(store: Store, day: date) -> list[dict]:
    return plans.units_for_day(store, day)


def within_shares(settings, status: dict) -> bool:
    return all(c["spent_usd"] <= c["limit_usd"] + 1e-9 for c in status["categories"].values())


def tiny(day: date) -> dict:
    with home(0.05) as (settings, store, _):
        code, seconds = run_day(day)
        status = budget_status(store, settings, day)
        plan = plans.latest_day_plan(store, day)
        first = units(store, day)
        deferred = [u for u in first if u["status"] == "deferred"]
        code_next, _ = run_day(day + timedelta(days=1))
        after = {u["id"]: u for u in units(store, day)}
        offered = [u for u in deferred if after[u["id"]]["reoffered_as"] or (after[u["id"]]["reason"] or "")
                   .startswith(f"offered again {day + timedelta(days=1)}")]
        waiting = plans.pending_deferred(store, LookBacks(day), day + timedelta(days=2), 0)
        return {"budget_usd": 0.05, "run_day_exit": code, "seconds": seconds, "plan_source": plan["source"],
                "utilisation": status["utilisation"],
                "plan_error": None, "units_completed": sum(u["status"] == "completed" for u in first),
                "spent_usd": status["spent_usd"], "within_limit": status["spent_usd"] <= 0.05 + 1e-9,
                "deferred": len(deferred), "deferred_with_reason": sum(bool(u["reason"]) for u in deferred),
                "dropped": len(plan["dropped"]), "dropped_reasons": sorted({d["reason"].split(":")[0]
                                                                            for d in plan["dropped"]}),
                "next_day_exit": code_next, "deferred_reoffered_next_day": len(offered),
                "still_waiting_after_next_day": len(waiting),
                "next_day_units_completed": sum(u["status"] == "completed"
                                                for u in units(store, day + timedelta(days=1))),
                "reasons": sorted({u["reason"].split(":")[0] for u in deferred})}


TIGHT_UNITS_PER_PHASE = 8


def seed_more_work_than_money(store: Store, day: date) -> None:
    """The day's plan: up to TIGHT_UNITS_PER_PHASE units a phase, cycling through every plannable
    template the phase allows that does not need the agent idle."""
    registry = load_registry()
    units = []
    for phase in PHASES:
        allowed = [t for t in registry.templates_for_phase(phase) if not t.requires_idle]
        for n in range(TIGHT_UNITS_PER_PHASE):
            t = allowed[n % len(allowed)]
            units.append(PlannedUnit(phase, t.id, t.category, t.priority, f"{t.name} ({n + 1})",
                                     "seeded: more work than money", registry.template_cost(t.id)))
    plans.save_day_plan(store, day=day, revision=1, source="llm", intention="more work than money",
                        from_phase=PHASES[0], phases=list(PHASES), units=units, dropped=[], offline=True,
                        now=datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc))


def tight(day: date) -> dict:
    """The second of two $0.30 days (estimates calibrated by the first, its deferred work waiting)."""
    with home(0.30, max_units_per_phase=TIGHT_UNITS_PER_PHASE) as (settings, store, _):
        first_exit, _ = run_day(day - timedelta(days=1))
        first = budget_status(store, settings, day - timedelta(days=1))
        seed_more_work_than_money(store, day)
        code, seconds = run_day(day)
        status = budget_status(store, settings, day)
        day_units = units(store, day)
        planned_usd = sum(u["estimated_cost_usd"] for u in day_units)
        return {"budget_usd": 0.30, "first_day_exit": first_exit, "first_day_utilisation": first["utilisation"],
                "first_day_categories_within_shares": within_shares(settings, first),
                "run_day_exit": code, "seconds": seconds,
                "planned_work_usd": round(planned_usd, 4), "spent_usd": status["spent_usd"],
                "usable_usd": round(settings.daily_budget_usd - settings.reserve_usd, 4),
                "utilisation": status["utilisation"], "exhausted": status["exhausted"],
                "overspend_usd": round(max(status["spent_usd"] - settings.daily_budget_usd, 0.0), 6),
                "categories_within_shares": within_shares(settings, status),
                "spent_beyond_shares_usd": status["spent_beyond_shares_usd"],
                "categories": {c: {"spent_usd": round(v["spent_usd"], 4), "limit_usd": round(v["limit_usd"], 4),
                                   "deferred_for_money": sum(u["status"] == "deferred" and u["defer_kind"] == "budget"
                                                             and u["category"] == c for u in day_units)}
                               for c, v in status["categories"].items()},
                "units": {s: sum(u["status"] == s for u in day_units)
                          for s in ("completed", "deferred", "failed", "planned")},
                # Whether the day had more work than money: units left undone for want of money.
                "deferred_for_money": sum(u["status"] == "deferred" and u["defer_kind"] == "budget"
                                          for u in day_units),
                "reservation_vs_bill": status["reservation_vs_bill"]}


def sample(day: date) -> dict:
    """The second of two $5 days: output bounds are measured from history, as on any day but the first."""
    with home(5.0) as (settings, store, _):
        first_exit, _ = run_day(day - timedelta(days=1))
        first = budget_status(store, settings, day - timedelta(days=1))["reservation_vs_bill"]
        code, seconds = run_day(day)
        status = budget_status(store, settings, day)
        rows = ledger.rows(store, day)
    pricing = load_pricing()

    def cost(r: dict, *, cached: bool, batched: bool) -> float:
        prompt = r["input_tokens"] + r["cache_creation_input_tokens"] + r["cache_read_input_tokens"]
        usage = (Usage(r["input_tokens"], r["output_tokens"], r["cache_creation_input_tokens"],
                       r["cache_read_input_tokens"], r["cache_creation_1h_input_tokens"]) if cached
                 else Usage(prompt, r["output_tokens"]))
        return pricing.cost(r["model"], usage, batch=batched and r["batch"])

    # The same calls priced three ways, side by side: as billed (caching and batches), with caching
    # but every call interactive, and uncached and unbatched (the list price of the same tokens).
    billed = sum(cost(r, cached=True, batched=True) for r in rows)
    cached_only = sum(cost(r, cached=True, batched=False) for r in rows)
    uncached = sum(cost(r, cached=False, batched=False) for r in rows)
    return {"budget_usd": 5.0, "run_day_exit": code, "seconds": seconds, "calls": len(rows),
            "batched_calls": sum(bool(r["batch"]) for r in rows),
            "first_day_exit": first_exit, "first_day_reservation_vs_bill": first,
            "reservation_vs_bill": status["reservation_vs_bill"], "cache": status["cache"],
            "batches": status["batches"],
            "ledger_usd": round(sum(r["cost_usd"] for r in rows), 6),
            "cost_with_caching_and_batches_usd": round(billed, 6), "cost_with_caching_only_usd": round(cached_only, 6),
            "cost_uncached_unbatched_usd": round(uncached, 6),
            "cost_ratio": round(billed / uncached, 4) if uncached else None,
            "cost_ratio_caching_only": round(cached_only / uncached, 4) if uncached else None,
            "alerts": [a["kind"] for a in status["alerts"]]}


SCENARIOS = {"tiny": tiny, "tight": tight, "sample": sample}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", type=date.fromisoformat, default=date(2026, 11, 20))
    parser.add_argument("--only", default=",".join(SCENARIOS))
    args = parser.parse_args()
    print(json.dumps({name: SCENARIOS[name](args.date) for name in args.only.split(",")}, indent=2, default=str))
