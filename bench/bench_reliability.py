"""Reliability figures: exactly once under concurrent runs, kill -9 at three moments, a week with faults.

Against a loopback Messages API (tests/fake_anthropic.py) and real `cass-pipelines` subprocesses, each
trial in a fresh CASS_HOME with the sample agent:

- concurrent: two `run-phase morning` of one partition at once;
- kill: SIGKILL through a failpoint (after a paid answer before its ledger row; mid memory; between the
  plan and the first action), then `status` right away, then the same command again;
- week: seven days of `run-day` with 20% of API requests failing (429/500/529/503);
- slow batches: days of `run-day` whose Message Batches outlast the wait (`batch_wait_s` 0.5 s, batches
  ending 3 s after creation, as a real batch may take an hour against a 30-minute wait), then one more
  `run-day` once they have ended: answers paid and never used, units re-offered as new work, units still
  waiting. With --before DIR, the same trial on that checkout too (first on PYTHONPATH), one after the other.

After each trial it counts the violations of tests/support.invariant_violations (actions paid by two
runs, batched requests paid twice, plan calls paid twice, holds left, units left running, claims left
held, paid answers missing from the ledger, ledger rows never paid) and prints everything as JSON.

Usage: .venv/bin/python bench/bench_reliability.py [--concurrent 10] [--kills 3] [--days 7]
       [--slow-batch-days 2] [--before DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from datetime import time as dtime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_anthropic import API_KEY, FakeAnthropic  # noqa: E402
from support import NOW, SAMPLE_DAY, invariant_violations  # noqa: E402

from cass_pipelines.store.db import Store  # noqa: E402

CLI = [sys.executable, "-m", "cass_pipelines.cli.main"]
KILLS = {"paid_before_ledger": ("run-phase", "morning", "paid_before_ledger:3"),
         "mid_memory": ("run-day", "--phases", "morning", "--no-journal", "memory_saved:10"),
         "plan_before_first_action": ("run-phase", "morning", "phase_planned")}


def home(server: FakeAnthropic, now: datetime, concurrency: int | None = None, config: str = "",
         code: str | None = None) -> dict:
    base = Path(tempfile.mkdtemp(prefix="cass-rel-"))
    env = {**os.environ, "CASS_HOME": str(base / "cass"), "DAGSTER_HOME": str(base / "dagster"),
           "CASS_LLM": "anthropic", "ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": API_KEY,
           "CASS_NOW": now.isoformat(), "PYTHONWARNINGS": "ignore"}
    # This checkout's code unless told another: the installed package may be another checkout's (editable).
    env["PYTHONPATH"] = os.pathsep.join([code or str(ROOT), os.environ.get("PYTHONPATH", "")])
    env.pop("CASS_FAILPOINT", None)
    run(env, "init", "--sample")
    config += f"llm_concurrency = {concurrency}\n" if concurrency else ""
    if config:
        toml = base / "cass" / "cass.toml"   # top-level keys: before the file's first [table]
        toml.write_text(config + toml.read_text(encoding="utf-8"), encoding="utf-8")
    return env


def run(env: dict, *args: str, failpoint: str | None = None) -> subprocess.CompletedProcess:
    extra = {"CASS_FAILPOINT": failpoint} if failpoint else {}
    # (run from the home: `python -m` puts the working directory first on sys.path, before PYTHONPATH)
    return subprocess.run([*CLI, *args], env={**env, **extra}, capture_output=True, text=True, timeout=900,
                          cwd=Path(env["CASS_HOME"]).parent)


def violations(env: dict, server: FakeAnthropic) -> dict[str, int]:
    found = invariant_violations(Store(Path(env["CASS_HOME"]) / "cass.duckdb"), server.answered)
    return {k: len(v) for k, v in found.items()}


def concurrent_trial(server: FakeAnthropic) -> dict:
    env = home(server, NOW)
    day = SAMPLE_DAY.isoformat()
    started = time.perf_counter()
    procs = [subprocess.Popen([*CLI, "run-phase", "morning", "--date", day], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    codes = [p.wait(timeout=900) for p in procs]
    store = Store(Path(env["CASS_HOME"]) / "cass.duckdb")
    return {"exit_codes": codes, "seconds": round(time.perf_counter() - started, 1),
            "plan_calls": store.scalar("SELECT count(*) FROM llm_ledger WHERE action_id = 'plan.decide'"),
            "violations": violations(env, server)}


def kill_trial(server: FakeAnthropic, moment: str) -> dict:
    *args, failpoint = KILLS[moment]
    env = home(server, NOW, concurrency=1 if moment == "mid_memory" else None)
    day_args = [*args[:2], "--date", SAMPLE_DAY.isoformat(), *args[2:]] if args[0] == "run-phase" else \
        [args[0], "--date", SAMPLE_DAY.isoformat(), *args[1:]]
    killed = run(env, *day_args, failpoint=failpoint)
    status = json.loads(run(env, "status", "--json").stdout)
    truthful = status["budget"]["reserved_usd"] == 0 and all(r["status"] != "STARTED" for r in status["recent_runs"])
    again = run(env, *day_args)
    found = violations(env, server)
    found.pop("actions_paid_by_two_runs")   # the interrupted action rightly runs again
    return {"killed_exit": killed.returncode, "status_truthful_after_kill": truthful,
            "rerun_exit": again.returncode, "violations": found}


def week_trial(server: FakeAnthropic, days: int) -> dict:
    server.fail_rate = 0.2
    first = SAMPLE_DAY
    env = home(server, NOW)
    spent = []
    for n in range(days):
        day = first + timedelta(days=n)
        env["CASS_NOW"] = datetime.combine(day + timedelta(days=1), dtime(7), tzinfo=timezone.utc).isoformat()
        done = run(env, "run-day", "--date", day.isoformat(), "--json")
        report = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
        spent.append({"date": day.isoformat(), "exit": done.returncode,
                      "spent_usd": report.get("budget", {}).get("spent_usd"),
                      "limit_usd": report.get("budget", {}).get("daily_limit_usd")})
    server.fail_rate = 0.0
    requests = len(server.requests)
    return {"days": spent, "requests": requests, "answered": len(server.answered),
            "violations": violations(env, server)}


def slow_batches_trial(server: FakeAnthropic, days: int, code: str | None) -> dict:
    env = home(server, NOW, config="batch_wait_s = 0.5\n", code=code)
    server.batch_delay_s = 3.0
    exits = []
    for n in range(days + 1):
        if n == days:
            server.batch_delay_s = 0.0   # every batch has ended: the next day's run-day collects them
        day = SAMPLE_DAY + timedelta(days=n)
        env["CASS_NOW"] = datetime.combine(day + timedelta(days=1), dtime(7), tzinfo=timezone.utc).isoformat()
        exits.append(run(env, "run-day", "--date", day.isoformat(),
                         *(["--phases", "morning"] if n == days else [])).returncode)
    store = Store(Path(env["CASS_HOME"]) / "cass.duckdb")
    unused = store.one("SELECT count(*) AS n, coalesce(sum(l.cost_usd), 0) AS usd FROM llm_batches b "
                       "JOIN llm_ledger l ON l.request_id = b.request_id WHERE b.state = 'collected' AND NOT b.used")
    return {"code": code or "this checkout", "run_day_exits": exits,
            "batched_requests": store.scalar("SELECT count(*) FROM llm_batches"),
            "answers_paid_never_used": unused["n"], "usd_paid_never_used": round(unused["usd"], 6),
            "units_reoffered_after_waiting_for_a_batch": store.scalar(
                "SELECT count(*) FROM work_units WHERE deferred_from IN "
                "(SELECT id FROM work_units WHERE defer_kind = 'batch')"),
            "units_still_waiting_for_a_batch": store.scalar(
                "SELECT count(*) FROM work_units WHERE status = 'deferred' AND defer_kind = 'batch'"),
            "violations": violations(env, server)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrent", type=int, default=10)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--slow-batch-days", type=int, default=2)
    parser.add_argument("--before", help="a checkout's directory: the slow-batches trial on that code too")
    args = parser.parse_args()
    out: dict = {}
    with FakeAnthropic(lifetime_s=7200) as server:
        trials = []
        for _ in range(args.concurrent):
            server.answered.clear()
            trials.append(concurrent_trial(server))
        out["concurrent"] = {"trials": len(trials), "actions_paid_by_two_runs": sum(
            t["violations"]["actions_paid_by_two_runs"] for t in trials),
            "plan_calls_paid_twice": sum(t["plan_calls"] > 1 for t in trials),
            "other_violations": sum(sum(v for k, v in t["violations"].items() if k != "actions_paid_by_two_runs")
                                    for t in trials), "runs": trials}
        kills = {}
        for moment in KILLS:
            results = []
            for _ in range(args.kills):
                server.answered.clear()
                results.append(kill_trial(server, moment))
            kills[moment] = results
        out["kills"] = kills
        if args.days:
            server.answered.clear()
            server.requests.clear()
            out["week_with_20pct_faults"] = week_trial(server, args.days)
        if args.slow_batch_days:
            out["slow_batches"] = []
            for code in [None, *([str(Path(args.before).resolve())] if args.before else [])]:
                server.answered.clear()
                out["slow_batches"].append(slow_batches_trial(server, args.slow_batch_days, code))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
