"""What prompt caching saves on the sample day.

Runs `cass-pipelines run-day` for the sample persona in a throw-away CASS_HOME with the Anthropic
backend pointed at the local Messages-API server (tests/fake_anthropic.py: same token estimates and
cache rules as the offline backend, model minimums for cacheable prefixes included), then reads the
ledger and prints: input tokens sent, the share read from cache, and the cost with caching against
the same calls priced without it. Two cache scenarios are shown:

- as run: the whole day back to back (run-day, a backfill), one provider cache for all calls;
- scheduled: phases hours apart, so a 5-minute cache only helps calls inside the same run.

Usage: .venv/bin/python bench/bench_cache.py [--date 2026-11-20] [--json]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from collections import defaultdict
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_anthropic import API_KEY, FakeAnthropic  # noqa: E402

from cass_pipelines.cli.main import main as cli  # noqa: E402
from cass_pipelines.config.settings import load_settings  # noqa: E402
from cass_pipelines.llm.base import Usage  # noqa: E402
from cass_pipelines.llm.pricing import load_pricing  # noqa: E402
from cass_pipelines.store import ledger  # noqa: E402
from cass_pipelines.store.db import Store  # noqa: E402


def usage_of(row: dict, **override: int) -> Usage:
    fields = {k: row[k] for k in ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                                  "cache_read_input_tokens", "cache_creation_1h_input_tokens")}
    return Usage(**{**fields, **override})


def uncached(row: dict) -> Usage:
    """The same call with no cache_control: every prompt token billed as plain input."""
    sent = row["input_tokens"] + row["cache_creation_input_tokens"] + row["cache_read_input_tokens"]
    return Usage(input_tokens=sent, output_tokens=row["output_tokens"])


def scheduled(rows: list[dict]) -> list[Usage]:
    """Re-apply the cache per Dagster run: the first cacheable call of a model in a run writes its
    prefix, later ones in that run read it (calls of one run are minutes apart, within the TTL)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for row in rows:
        prefix = row["cache_creation_input_tokens"] + row["cache_read_input_tokens"]
        key = (row["run_id"] or "", row["model"])
        if not prefix:
            out.append(usage_of(row))
        elif key in seen:
            out.append(usage_of(row, cache_creation_input_tokens=0, cache_creation_1h_input_tokens=0,
                                cache_read_input_tokens=prefix))
        else:
            out.append(usage_of(row, cache_creation_input_tokens=prefix, cache_read_input_tokens=0,
                                cache_creation_1h_input_tokens=prefix if row["cache_creation_1h_input_tokens"] else 0))
        seen.add(key)
    return out


def summarise(rows: list[dict], usages: list[Usage]) -> dict:
    pricing = load_pricing()
    total = sum(usages, Usage())
    sent = total.input_tokens + total.cache_creation_input_tokens + total.cache_read_input_tokens
    with_cache = sum(pricing.cost(r["model"], u) for r, u in zip(rows, usages))
    without = sum(pricing.cost(r["model"], uncached(r)) for r in rows)
    return {"input_tokens_sent": sent, "read_from_cache": total.cache_read_input_tokens,
            "written_to_cache": total.cache_creation_input_tokens,
            "share_read_from_cache": round(total.cache_read_input_tokens / sent, 4) if sent else 0.0,
            "cost_with_caching_usd": round(with_cache, 6), "cost_without_caching_usd": round(without, 6),
            "saving_share": round(1 - with_cache / without, 4) if without else 0.0}


def run(day: date) -> dict:
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic(seed=0) as server:
        os.environ.update({"CASS_HOME": f"{tmp}/cass", "DAGSTER_HOME": f"{tmp}/dagster", "CASS_LLM": "anthropic",
                           "ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": API_KEY})
        Path(f"{tmp}/dagster").mkdir()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert cli(["init", "--sample"]) == 0
            code = cli(["run-day", "--date", day.isoformat(), "--json"])
        rows = ledger.rows(Store(load_settings().db_path))
    by_model: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_model[row["model"]].append(row)
    return {"date": day.isoformat(), "run_day_exit": code, "calls": len(rows), "http_requests": len(server.requests),
            "as_run": summarise(rows, [usage_of(r) for r in rows]),
            "scheduled_5m": summarise(rows, scheduled(rows)),
            "by_model": {m: summarise(rs, [usage_of(r) for r in rs]) for m, rs in sorted(by_model.items())}}


def render(report: dict) -> str:
    lines = [f"sample day {report['date']}: {report['calls']} LLM calls (run-day exit {report['run_day_exit']})"]
    for name, title in (("as_run", "as run (day back to back, one cache)"),
                        ("scheduled_5m", "scheduled (phases hours apart, 5-minute cache per run)")):
        s = report[name]
        lines += [f"\n{title}:",
                  f"  input tokens sent     {s['input_tokens_sent']:>9,}",
                  f"  read from cache       {s['read_from_cache']:>9,}  ({s['share_read_from_cache']:.1%})",
                  f"  written to cache      {s['written_to_cache']:>9,}",
                  f"  cost with caching     ${s['cost_with_caching_usd']:.4f}",
                  f"  cost without caching  ${s['cost_without_caching_usd']:.4f}  "
                  f"(caching saves {s['saving_share']:.1%})"]
    lines.append("\nby model (as run):")
    for model, s in report["by_model"].items():
        lines.append(f"  {model:<20} sent {s['input_tokens_sent']:>8,}  cached {s['share_read_from_cache']:>6.1%}  "
                     f"${s['cost_with_caching_usd']:.4f} vs ${s['cost_without_caching_usd']:.4f} uncached")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", type=date.fromisoformat, default=date(2026, 11, 20))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.date)
    print(json.dumps(result, indent=2) if args.json else render(result))
