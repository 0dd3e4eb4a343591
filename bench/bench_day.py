"""The sample day through Dagster, as `run-day` runs it (memory catch-up, four phases, journal),
with the real handlers and with no-op handlers side by side, each in a fresh process and CASS_HOME.

    .venv/bin/python bench/bench_day.py                      # offline: real vs no-op handlers
    .venv/bin/python bench/bench_day.py --latency 2          # real handlers, loopback API answering in 2 s
    .venv/bin/python bench/bench_day.py --repeat 2           # alternate the modes, twice each

Offline, the no-op registry is the shipped one with every handler replaced by one that returns
success without a call or a write (bench/noop_handlers.py); planning, summaries and the journal's
bookkeeping still run. Figures (JSON on stdout):
- `day_wall_s` per mode, and per run: wall, steps by kind, LLM calls, time inside LLM calls
  (ledger latency), DuckDB opens (every duckdb.connect of the process).
- `action_steps`: steps that run one action (`...action_N[...]`); other steps are counted apart.
- `real_minus_noop_ms_per_action_step`: what the real handlers add per action step (their offline
  LLM calls' bookkeeping, store reads and writes): the issue's per-action-step overhead.
- `noop_ms_per_action_step`: the whole no-op day's wall divided by its action steps.
With --latency, the API is tests/fake_anthropic.py's server answering every request after a fixed
delay; `orchestration_share` = (wall - time inside LLM calls) / wall, for the day and per run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACTION_STEP = ".action_"


def load() -> float:
    return round(os.getloadavg()[0], 2)


def noop_registry(path: Path) -> Path:
    """The shipped registry with every handler replaced by a no-op."""
    shipped = json.loads((ROOT / "cass_pipelines" / "data" / "definitions.json").read_text())
    for action in shipped["actions"]:
        action["handler"] = "noop_handlers:noop"
    path.write_text(json.dumps(shipped))
    return path


def child(mode: str, day_text: str, latency: float) -> None:
    """One day in this process; prints one JSON line."""
    import duckdb

    opens = [0]
    real_connect = duckdb.connect

    def counting_connect(*a, **kw):
        opens[0] += 1
        return real_connect(*a, **kw)

    duckdb.connect = counting_connect
    started_imports = time.perf_counter()
    from datetime import date, timedelta

    from cass_pipelines.cli.main import main as cli
    from cass_pipelines.core.categories import PHASES
    from cass_pipelines.core.clock import SystemClock
    from cass_pipelines.core.runtime import open_runtime
    from cass_pipelines.definitions import build_defs
    from cass_pipelines.execution import instance_for, run_journal, run_memory, run_phase
    from cass_pipelines.store import conversations, ledger
    import_s = time.perf_counter() - started_imports

    day = date.fromisoformat(day_text)
    assert cli(["init", "--sample"]) == 0
    rt = open_runtime()
    instance, defs = instance_for(rt.settings), build_defs(rt.settings, rt.registry)
    idle_before = SystemClock().now() - timedelta(minutes=rt.settings.idle_threshold_minutes)
    jobs = []
    if conversations.idle_unsummarized(rt.store, idle_before, limit=1):
        jobs.append(("memory", lambda: run_memory(defs, instance)))
    jobs += [(p, lambda p=p: run_phase(defs, instance, day, p)) for p in PHASES]
    jobs.append(("journal", lambda: run_journal(defs, instance, day)))
    runs = []
    opens[0] = 0
    for name, launch in jobs:
        before = opens[0]
        started = time.perf_counter()
        result = launch()
        wall = time.perf_counter() - started
        steps = step_walls(instance, result.run_id)
        action = [s for k, s in steps.items() if ACTION_STEP in k]
        totals = ledger.totals(rt.store, run_id=result.run_id)
        llm_s = float(rt.store.scalar("SELECT coalesce(sum(latency_ms), 0) / 1000.0 FROM llm_ledger "
                                      "WHERE run_id = ?", [result.run_id]))
        runs.append({"run": name, "ok": result.success, "wall_s": round(wall, 3), "steps": len(steps),
                     "action_steps": len(action), "other_steps": len(steps) - len(action),
                     "action_step_wall_ms_median": round(statistics.median(action) * 1000, 1) if action else None,
                     "llm_calls": int(totals["calls"]), "llm_s": round(llm_s, 3),
                     "duckdb_opens": opens[0] - before})
    print(json.dumps({"mode": mode, "latency_s": latency, "import_s": round(import_s, 3), "runs": runs}))


def step_walls(instance, run_id: str) -> dict[str, float]:
    """Seconds from STEP_START to STEP_SUCCESS/FAILURE per step key (checks included)."""
    starts: dict[str, float] = {}
    walls: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in starts:
            walls[event.step_key] = entry.timestamp - starts.pop(event.step_key)
    return walls


def launch(mode: str, day: str, latency: float, tmp: Path) -> dict:
    home = tmp / f"{mode}-{time.perf_counter_ns()}"
    env = {**os.environ, "CASS_HOME": str(home / "cass"), "DAGSTER_HOME": str(home / "dagster"),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    env.pop("CASS_ACTIONS_FILE", None)
    (home / "dagster").mkdir(parents=True)
    if mode == "noop":
        env["CASS_ACTIONS_FILE"] = str(noop_registry(home / "noop_definitions.json"))
    server = None
    if latency:
        from fake_anthropic import API_KEY, FakeAnthropic, Reply

        class Delayed(FakeAnthropic):
            def _next_reply(self):   # every answer after the same fixed delay
                return super()._next_reply() or Reply(delay_s=latency)

        server = Delayed(lifetime_s=3600).__enter__()
        env.update(CASS_LLM="anthropic", ANTHROPIC_API_KEY=API_KEY, ANTHROPIC_BASE_URL=server.url)
    else:
        env.update(CASS_LLM="offline")
    try:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", mode, "--date", day, "--latency", str(latency)],
                              env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
    finally:
        if server:
            server.__exit__(None, None, None)
    if proc.returncode:
        sys.exit(f"{mode} day failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = round(wall, 3)
    out["day_wall_s"] = round(sum(r["wall_s"] for r in out["runs"]), 3)
    return out


def summary(results: list[dict]) -> dict:
    by_mode: dict[str, list[dict]] = {}
    for r in results:
        by_mode.setdefault(r["mode"], []).append(r)
    med = {m: statistics.median(x["day_wall_s"] for x in rs) for m, rs in by_mode.items()}
    first = results[0]
    runs = first["runs"]
    action_steps = sum(r["action_steps"] for r in runs)
    out = {"day_wall_s_median": med, "action_steps": action_steps,
           "other_steps": sum(r["other_steps"] for r in runs),
           "llm_calls": {m: sum(r["llm_calls"] for r in rs[0]["runs"]) for m, rs in by_mode.items()},
           "duckdb_opens": {m: sum(r["duckdb_opens"] for r in rs[0]["runs"]) for m, rs in by_mode.items()}}
    if "noop" in med and "real" in med and action_steps:
        out["real_minus_noop_ms_per_action_step"] = round((med["real"] - med["noop"]) / action_steps * 1000, 1)
        out["noop_ms_per_action_step"] = round(med["noop"] / action_steps * 1000, 1)
    if first["latency_s"]:
        llm = sum(r["llm_s"] for r in runs)
        wall = first["day_wall_s"]
        out["llm_s"] = round(llm, 2)
        out["orchestration_s"] = round(wall - llm, 2)
        out["orchestration_share"] = round((wall - llm) / wall, 4)
        out["per_run_orchestration_share"] = {r["run"]: round((r["wall_s"] - r["llm_s"]) / r["wall_s"], 4)
                                              for r in runs}
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--date", default="2026-11-20")
    parser.add_argument("--latency", type=float, default=0.0, help="loopback API delay per request, seconds")
    parser.add_argument("--modes", default="real,noop", help="real and/or noop (offline only)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child")
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.date, args.latency)
    modes = ["real"] if args.latency else args.modes.split(",")
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="cass-bench-day-") as tmp:
        results = [launch(m, args.date, args.latency, Path(tmp)) for _ in range(args.repeat) for m in modes]
    print(json.dumps({"bench": "day", "date": args.date, "latency_s": args.latency, "cpus": os.cpu_count(),
                      "load_1m_before": load_before, "load_1m_after": load(),
                      "summary": summary(results), "results": results}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
