"""The sample day through Dagster, as `run-day` runs it (memory catch-up, four phases, journal),
with the real handlers and with no-op handlers side by side, each in a fresh process and CASS_HOME.

    .venv/bin/python bench/bench_day.py                      # offline: real vs no-op handlers
    .venv/bin/python bench/bench_day.py --latency 2          # real handlers, loopback API answering in 2 s
    .venv/bin/python bench/bench_day.py --latency 2 --count-latency 0.3   # and each token count in 0.3 s
    .venv/bin/python bench/bench_day.py --repeat 2           # alternate the modes, twice each
    .venv/bin/python bench/bench_day.py --before /path/to/old/checkout   # that code too, runs interleaved
    .venv/bin/python bench/bench_day.py --latency 2 --modes real,resident  # and with the SDK imported first
    .venv/bin/python bench/bench_day.py --latency 2 --modes real,warm,spawned   # and each run launched as the daemon does

Offline, the no-op registry is the shipped one with every handler replaced by one that returns
success without a call or a write (bench/noop_handlers.py), except memory_job's (the day is planned
from what it writes, so both modes plan the same units); planning, summaries and the bookkeeping
of every step still run. Figures (JSON on stdout):
- `summary` (this checkout) and, with --before, `summary_before` (that checkout, first on PYTHONPATH;
  its runs alternate with this checkout's, so both see the same machine).
- `day_wall_s` per mode, and per run: wall, steps by kind, LLM calls, time inside LLM calls
  (ledger latency), DuckDB opens (every store.db.connect: one file lock window).
- `action_steps`: steps that run one action (`...action_N[...]`); other steps are counted apart.
- `phases_wall_s`: the four phase runs (planning, action steps, summaries, costs, checks).
- `real_minus_noop_ms_per_action_step`: what the real handlers add per action step (their offline
  LLM calls with reservation, ledger and settlement, their store reads and writes): the issue's
  per-action-step overhead. `same_plan` says both modes ran the same number of action steps.
- `ms_per_action_step`: phase wall / action steps per mode (everything a phase costs, per action).
- Every wall figure has its CPU seconds next to it (`cpu_s`, `day_cpu_s`, `cpu_ms_per_action_step`,
  `real_minus_noop_cpu_ms_per_action_step`: the run's process, user + system), and `machine` gives the
  load average at the start and the end (bench/machine.py): on a loaded machine read the CPU figures.
Modes `warm` and `spawned` (with --latency) launch each run as the daemon does, from the same process: `warm`
through the shipped launcher (cass_pipelines/run_launcher.py: a fork of a worker that imported everything
once; the worker starts at the day's first run, counted in it), `spawned` as a new process per run running
`dagster api execute_run` (what Dagster's DefaultRunLauncher has its code server start); a run's wall is from
its creation until that process ended (`spawned`) or the instance recorded it finished (`warm`). Their runs'
CPU is in other processes: their CPU figures are null. Mode `resident` (with --latency) is `real` in a process that imported the anthropic SDK before the day
(in `import_s`), as a worker that stays up between runs would have it: the SDK's import (about 1 s
here, `python -X importtime -c "import anthropic"`) is otherwise paid by the day's first run.
With --latency, the API is tests/fake_anthropic.py's server answering every request after a fixed
delay, and ending every message batch that long after its creation. `llm_busy_s` is the time the API
was working (bench/loopback.py: an interactive call in flight, or a batched request's batch running,
not the wait between its end and the look that saw it); `orchestration_share` = (wall - llm_busy_s) / wall, for the day and per run;
`orchestration_share_cpu_estimate` = CPU / (CPU + llm_busy_s), what an idle machine would show. These are
of the repeat whose orchestration is the median; `orchestration_s_each` gives every repeat's.
`memory_catchup` is memory_job's run (the sample's 56 conversations: batched, all in one batch).
`api_requests` (with --latency, per day): what the loopback API was asked: messages posted, token
countings, batches created, looks at a batch's status. With --count-latency (default 0: a token count
answered at once, which no real API does), `counting_s` is the time the API spent counting tokens for
the day (their union), part of `orchestration_s`: a request our hold sizing makes before each call.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from launching import forked, spawned
from loopback import api_wait_intervals, counting_s, delayed_api, requests_to
from machine import count_store_opens, machine_after, machine_before, measured, union_s

ROOT = Path(__file__).resolve().parent.parent
ACTION_STEP = ".action_"
LAUNCHED = ("warm", "spawned")   # modes whose runs are launched, not executed in this process
MEMORY_TEMPLATE = "conversation_catchup"   # what memory_job runs


def noop_registry(path: Path, code: str | None) -> Path:
    """The registry `code` ships (this checkout's by default) with every handler replaced by a no-op, except the
    memory catch-up's: the day is planned from the conversation summaries it writes, so both modes plan the same day."""
    shipped = json.loads((Path(code or ROOT) / "cass_pipelines" / "data" / "definitions.json").read_text())
    memory = {a for t in shipped["templates"] if t["id"] == MEMORY_TEMPLATE for a in t["action_sequence"]}
    for action in shipped["actions"]:
        if action["id"] not in memory:
            action["handler"] = "noop_handlers:noop"
    path.write_text(json.dumps(shipped))
    return path


def launched(mode: str, instance) -> dict[str, object]:
    """execution.execute's stand-in that launches the run (create it, then start it as the daemon would) and
    waits until it ended. Returns the replacement and the warm launcher (None for `spawned`)."""
    from cass_pipelines import execution
    from cass_pipelines.run_launcher import WarmRunLauncher

    launcher = WarmRunLauncher() if mode == "warm" else None
    if launcher:
        launcher.register_instance(instance)

    class Launched:
        def __init__(self, run_id: str):
            self.run_id = run_id
            self.success = instance.get_run_by_id(run_id).status.value == "SUCCESS"

    def execute(defs, instance_, job_name, run_config, tags, partition_key=None):
        run = execution.create_run(defs, instance, job_name, run_config, tags, partition_key)
        if launcher:
            forked(launcher, instance, run)
        else:
            spawned(instance, run)
        return Launched(run.run_id)

    execution.execute = execute
    return {"launcher": launcher}


def child(mode: str, day_text: str, latency: float) -> None:
    """One day in this process; prints one JSON line."""
    started_imports = time.perf_counter()
    opens = count_store_opens()
    from datetime import date, timedelta

    from cass_pipelines.cli.main import main as cli
    from cass_pipelines.definitions import build_defs
    from cass_pipelines.domain.categories import PHASES
    from cass_pipelines.domain.clock import clock_from_env
    from cass_pipelines.execution import instance_for, run_journal, run_memory, run_phase
    from cass_pipelines.services.runtime import open_runtime
    from cass_pipelines.store import conversations, ledger
    if mode == "resident":
        import anthropic  # noqa: F401  (what a resident worker imported once, long before this day)
    import_s = time.perf_counter() - started_imports

    day = date.fromisoformat(day_text)
    with contextlib.redirect_stdout(sys.stderr):   # stdout carries only the JSON figures
        assert cli(["init", "--sample"]) == 0
    rt = open_runtime()
    instance, defs = instance_for(rt.settings), build_defs(rt.settings, rt.registry)
    launch_mode = launched(mode, instance) if mode in LAUNCHED else None
    now = clock_from_env().now()
    idle_before = now - timedelta(minutes=rt.settings.idle_threshold_minutes)
    jobs = []
    if conversations.idle_unsummarized(rt.store, idle_before, now=now, limit=1):
        jobs.append(("memory", lambda: run_memory(defs, instance)))
    jobs += [(p, lambda p=p: run_phase(defs, instance, day, p)) for p in PHASES]
    jobs.append(("journal", lambda: run_journal(defs, instance, day)))
    runs = []
    opens[0] = 0
    for name, launch in jobs:
        before = opens[0]
        with measured() as span:
            result = launch()
        wall = span.wall_s
        steps = step_walls(instance, result.run_id)
        action = [s for k, s in steps.items() if ACTION_STEP in k]
        totals = ledger.totals(rt.store, run_id=result.run_id)
        calls = rt.store.all("SELECT epoch(ts) AS t, latency_ms / 1000.0 AS s FROM llm_ledger WHERE run_id = ?",
                             [result.run_id])
        llm_s = sum(c["s"] for c in calls)
        llm_busy_s = union_s(api_wait_intervals(rt.store, result.run_id, latency))
        # Time in calls per work unit: what running a phase's units side by side could overlap at most.
        units = rt.store.all("SELECT sum(latency_ms) / 1000.0 AS s FROM llm_ledger WHERE run_id = ? "
                             "AND work_unit_id IS NOT NULL GROUP BY work_unit_id", [result.run_id])
        runs.append({"run": name, "ok": result.success, "wall_s": round(wall, 3),
                     "cpu_s": None if launch_mode else round(span.cpu_s, 3),
                     "steps": len(steps),
                     "action_steps": len(action), "other_steps": len(steps) - len(action),
                     "action_step_wall_ms_median": round(statistics.median(action) * 1000, 1) if action else None,
                     "llm_calls": int(totals["calls"]), "llm_s": round(llm_s, 3), "llm_busy_s": round(llm_busy_s, 3),
                     "units_with_calls": len(units), "unit_llm_s_sum": round(sum(u["s"] for u in units), 3),
                     "unit_llm_s_longest": round(max((u["s"] for u in units), default=0.0), 3),
                     "duckdb_opens": None if launch_mode else opens[0] - before})
    if launch_mode and launch_mode["launcher"]:
        launch_mode["launcher"].dispose()
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


def launch(mode: str, day: str, latency: float, tmp: Path, code: str | None = None, count_latency: float = 0.0) -> dict:
    home = tmp / f"{mode}-{time.perf_counter_ns()}"
    env = {**os.environ, "CASS_HOME": str(home / "cass"), "DAGSTER_HOME": str(home / "dagster"),
           # This checkout's code unless told another: the installed package may be another checkout's (editable).
           "PYTHONPATH": os.pathsep.join([code or str(ROOT), str(ROOT / "bench"), str(ROOT / "tests"),
                                          os.environ.get("PYTHONPATH", "")])}
    env.pop("CASS_ACTIONS_FILE", None)
    (home / "dagster").mkdir(parents=True)
    if mode == "noop":
        env["CASS_ACTIONS_FILE"] = str(noop_registry(home / "noop_definitions.json", code))
        (home / "cass").mkdir()   # init keeps this cass.toml: the registry may name the no-op handler
        (home / "cass" / "cass.toml").write_text('handler_modules = ["noop_handlers"]\n')
    # A message batch ends `latency` after its creation, as an interactive call answers.
    with (delayed_api(latency, batch_delay_s=latency, count_latency_s=count_latency) if latency
          else contextlib.nullcontext({"CASS_LLM": "offline"})) as api:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", mode, "--date", day, "--latency", str(latency)],
                              env={**env, **api}, capture_output=True, text=True)
        wall = time.perf_counter() - started
        asked = {**requests_to(api), "counting_s": round(counting_s(api), 3)} if latency else None
    if proc.returncode:
        sys.exit(f"{mode} day failed ({code or 'this checkout'}):\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if asked is not None:
        out["api_requests"] = asked
    out["process_wall_s"] = round(wall, 3)
    out["day_wall_s"] = round(sum(r["wall_s"] for r in out["runs"]), 3)
    return out


def summary(results: list[dict]) -> dict:
    by_mode: dict[str, list[dict]] = {}
    for r in results:
        by_mode.setdefault(r["mode"], []).append(r)

    def med(mode: str, figure) -> float | None:
        try:
            return round(statistics.median(figure(x["runs"]) for x in by_mode[mode]), 3)
        except TypeError:   # a CPU figure of launched runs (null: their CPU is in other processes)
            return None

    def phases(runs, key="wall_s") -> float:
        return sum(r[key] for r in runs if r["run"] not in ("memory", "journal"))

    out: dict = {"day_wall_s": {m: med(m, lambda runs: sum(r["wall_s"] for r in runs)) for m in by_mode},
                 "day_cpu_s": {m: med(m, lambda runs: sum(r["cpu_s"] for r in runs)) for m in by_mode},
                 "phases_wall_s": {m: med(m, phases) for m in by_mode},
                 "phases_cpu_s": {m: med(m, lambda runs: phases(runs, "cpu_s")) for m in by_mode}}
    for key in ("action_steps", "other_steps", "llm_calls", "duckdb_opens"):
        out[key] = {m: sum(r[key] for r in rs[0]["runs"]) for m, rs in by_mode.items() if m not in LAUNCHED or
                    key != "duckdb_opens"}
    steps = out["action_steps"]
    out["ms_per_action_step"] = {m: round(out["phases_wall_s"][m] / steps[m] * 1000, 1) for m in by_mode if steps[m]}
    out["cpu_ms_per_action_step"] = {m: round(out["phases_cpu_s"][m] / steps[m] * 1000, 1)
                                     for m in by_mode if steps[m] and m not in LAUNCHED}
    if "noop" in by_mode and "real" in by_mode and steps["real"]:
        out["same_plan"] = steps["real"] == steps["noop"]
        for key, figure in (("real_minus_noop_ms_per_action_step", "phases_wall_s"),
                            ("real_minus_noop_cpu_ms_per_action_step", "phases_cpu_s")):
            out[key] = round((out[figure]["real"] - out[figure]["noop"]) / steps["real"] * 1000, 1)
    if results[0]["latency_s"]:
        # A resident process's figures (the SDK imported before the day) beside the real ones.
        out.update({**latency_figures(by_mode["real"])} if "real" in by_mode else {})
        # ... and the day's runs launched as the daemon launches them.
        for mode in ("resident", *LAUNCHED):
            if mode in by_mode:
                out[mode] = latency_figures(by_mode[mode])
    return out


def latency_figures(results: list[dict]) -> dict:
    """The day at a loopback latency, of one mode's repeats: of the repeat whose orchestration is the
    median (the lower of two), and each repeat's orchestration."""
    def orchestration(result: dict) -> float:
        return sum(r["wall_s"] - r["llm_busy_s"] for r in result["runs"])

    chosen = sorted(results, key=orchestration)[(len(results) - 1) // 2]
    out: dict = {"orchestration_s_each": [round(orchestration(r), 2) for r in results]}
    runs = chosen["runs"]
    busy = sum(r["llm_busy_s"] for r in runs)
    wall = sum(r["wall_s"] for r in runs)
    cpu = None if any(r["cpu_s"] is None for r in runs) else sum(r["cpu_s"] for r in runs)
    out["llm_s"] = round(sum(r["llm_s"] for r in runs), 2)       # summed latencies (calls may overlap)
    out["llm_busy_s"] = round(busy, 2)                          # time with at least one call in flight
    out["orchestration_s"] = round(wall - busy, 2)
    out["orchestration_share"] = round((wall - busy) / wall, 4)
    # What an idle machine would show: the day's own CPU plus the time spent waiting for the API.
    out["orchestration_share_cpu_estimate"] = round(cpu / (cpu + busy), 4) if cpu is not None else None
    out["per_run_orchestration_share"] = {r["run"]: round((r["wall_s"] - r["llm_busy_s"]) / r["wall_s"], 4)
                                          for r in runs}
    # Concurrent units within a phase could save at most, per phase, its units' time in calls
    # minus its longest unit's (and nothing of the CPU the steps spend).
    out["concurrent_units_saving_bound_s"] = round(sum(
        r["unit_llm_s_sum"] - r["unit_llm_s_longest"] for r in runs if r["run"] not in ("memory", "journal")), 2)
    memory = next((r for r in runs if r["run"] == "memory"), None)
    out["memory_catchup"] = memory and {k: memory[k] for k in ("wall_s", "cpu_s", "llm_calls", "llm_busy_s")}
    out["api_requests"] = chosen["api_requests"]
    out["import_s"] = statistics.median(r["import_s"] for r in results)   # the process's, before the day
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--date", help="the day to run (default: yesterday)")
    parser.add_argument("--latency", type=float, default=0.0, help="loopback API delay per request, seconds")
    parser.add_argument("--count-latency", type=float, default=0.0, help="loopback delay per token count, seconds")
    parser.add_argument("--modes", help="offline: real and/or noop (default both); with --latency: real and/or "
                                        "resident, warm, spawned (default real)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--before", help="a checkout's directory to compare with (put first on PYTHONPATH)")
    parser.add_argument("--child")
    args = parser.parse_args(argv)
    args.date = args.date or (datetime.now().date() - timedelta(days=1)).isoformat()
    if args.child:
        return child(args.child, args.date, args.latency)
    modes = (args.modes or ("real" if args.latency else "real,noop")).split(",")
    if {"noop"} & set(modes) and args.latency or {"resident", *LAUNCHED} & set(modes) and not args.latency:
        parser.error("--modes: noop runs offline only, resident, warm and spawned with --latency only")
    machine = machine_before()
    codes = [None, *([str(Path(args.before).resolve())] if args.before else [])]
    with tempfile.TemporaryDirectory(prefix="cass-bench-day-") as tmp:
        runs = [(code, launch(m, args.date, args.latency, Path(tmp), code, args.count_latency))
                for _ in range(args.repeat) for m in modes for code in codes]
    results = [r for code, r in runs if code is None]
    before = [r for code, r in runs if code is not None]
    print(json.dumps({"bench": "day", "date": args.date, "latency_s": args.latency,
                      "count_latency_s": args.count_latency, "before": args.before,
                      "machine": machine_after(machine), "summary": summary(results),
                      **({"summary_before": summary(before)} if before else {}),
                      "results": results, **({"results_before": before} if before else {})}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
