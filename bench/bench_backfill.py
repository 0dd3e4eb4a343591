"""A UI backfill of 3 days x 4 phases, measured: launched the way the UI launches it (GraphQL
`launchPartitionBackfill` on a running `cass-pipelines ui`, i.e. `dagster dev` with the shipped
dagster.yaml: the queue of run_queue.py, its daemon, the default run launcher), then the same 12
partitions through the CLI (`run-day --no-journal` day by day, in a fresh CASS_HOME) for comparison.

    .venv/bin/python bench/bench_backfill.py            # the 3 days before yesterday, offline LLM
    .venv/bin/python bench/bench_backfill.py --days 2
    .venv/bin/python bench/bench_backfill.py --launchers warm,default   # and with Dagster's run launcher

Figures (JSON on stdout):
- `backfill.runs`: per run in start order: partition, status, queued/start/end (seconds after the
  launch), duration; `in_day_order`: the runs started in day and phase order; `overlaps`: pairs of
  runs whose [start, end] intersect (each run writes the DuckDB file: should be none);
  `plan_revisions`: the highest plan revision per day (1 = never re-planned).
- `cli.runs`: each phase run's duration (Dagster's run record, start to end); `day_process_wall_s`:
  each `run-day` process (interpreter start and the first day's memory catch-up included).
- `sum_of_run_durations_s`: the 12 runs' durations added up, backfill and CLI.
- `ratio_to_cli`: per partition, backfill run duration / CLI run duration (the issue: <= 1.5).
- `check_from_ui`: `actions_succeeded` executed alone for one partition through GraphQL, as the
  check's Execute button does.
- `machine`: load average at the start and end, this bench's wall and CPU (bench/machine.py).
- With `--launchers warm,default`, `backfill_default_launcher` is the same backfill in another home whose
  dagster.yaml has no `run_launcher` entry (Dagster's DefaultRunLauncher: its code server starts a new
  process per run), beside `backfill` (the shipped warm run worker, run_launcher.py); `last_end_after_launch_s`
  is the whole backfill's wall.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from machine import machine_after, machine_before

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from ui_server import CLI, graphql, ui_server  # noqa: E402

PHASES = ("morning", "afternoon", "evening", "night")
PHASE_ASSETS = ("phase_plan", "phase_work", "work_summaries", "cost_records")
CHECK = """mutation($p: ExecutionParams!) { launchPipelineExecution(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on InvalidSubsetError { message } } }"""
LAUNCH = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""


def home_env(base: Path) -> dict[str, str]:
    env = {**os.environ, "CASS_HOME": str(base / "cass"), "DAGSTER_HOME": str(base / "dagster"), "CASS_LLM": "offline"}
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "CASS_LOG_FORMAT", "CASS_ACTIONS_FILE"):
        env.pop(var, None)
    subprocess.run([*CLI, "init", "--sample"], env=env, check=True, capture_output=True, timeout=600)
    return env


def child(code: str, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode:
        sys.exit(f"reading the home failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def run_records(env: dict[str, str], **tags: str) -> list[dict]:
    """The home's runs (oldest first), read in a child so this process holds no Dagster instance."""
    code = ("import json, sys, dagster as dg\n"
            "tags = json.loads(sys.argv[1])\n"
            "with dg.DagsterInstance.get() as i:\n"
            "    recs = i.get_run_records(dg.RunsFilter(tags=tags) if tags else None, ascending=True)\n"
            "    print(json.dumps([{'run_id': r.dagster_run.run_id, 'partition': r.dagster_run.tags.get('dagster/partition'),"
            " 'status': r.dagster_run.status.value, 'created': r.create_timestamp.timestamp(), 'start': r.start_time,"
            " 'end': r.end_time, 'held': r.dagster_run.tags.get('cass/queue')} for r in recs]))\n")
    return json.loads(child(code, env, json.dumps(tags)))


def plan_revisions(env: dict[str, str]) -> dict[str, int]:
    code = ("import json\nfrom cass_pipelines.services.runtime import open_store\n"
            "rows = open_store()[1].all('SELECT date::VARCHAR AS d, max(revision) AS r FROM day_plans GROUP BY ALL')\n"
            "print(json.dumps({x['d']: x['r'] for x in rows}))\n")
    return json.loads(child(code, env))


def without_run_launcher(env: dict[str, str]) -> None:
    """The home's dagster.yaml without the shipped `run_launcher` entry: Dagster's DefaultRunLauncher."""
    path = Path(env["DAGSTER_HOME"]) / "dagster.yaml"
    text = path.read_text()
    entry = "run_launcher:\n  module: cass_pipelines.run_launcher\n  class: WarmRunLauncher\n"
    assert entry in text, "the shipped dagster.yaml has no run_launcher entry"
    path.write_text(text.replace(entry, ""))


def backfill(base: Path, keys: list[str], deadline_s: float, launcher: str = "warm") -> dict:
    env = home_env(base)
    if launcher == "default":
        without_run_launcher(env)
    started = time.perf_counter()
    with ui_server(env, base / "dagster-dev.log", deadline_s) as url:
        ready_s = time.perf_counter() - started
        launched_at = time.time()
        data = graphql(url, LAUNCH, {"p": {"partitionNames": keys,
                                           "assetSelection": [{"path": [a]} for a in PHASE_ASSETS]}})
        result = data["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            sys.exit(f"backfill refused: {result}")
        backfill_id = result["backfillId"]
        while True:
            runs = run_records(env, **{"dagster/backfill": backfill_id})
            done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
            if len(done) == len(keys):
                break
            if time.perf_counter() - started > deadline_s:
                sys.exit(f"backfill not done in {deadline_s} s: {runs}")
            time.sleep(5)
        check = execute_check(url, env, keys[0], deadline_s)
    return {"webserver_ready_s": round(ready_s, 1), "backfill_id": backfill_id, "launched_at": launched_at,
            "runs": runs, "all_runs": run_records(env), "plan_revisions": plan_revisions(env), "check": check}


def execute_check(url: str, env: dict[str, str], key: str, deadline_s: float) -> dict:
    """`actions_succeeded` executed alone for one partition, as the check's Execute button does (the
    implicit asset job with only the check selected, tagged with the partition)."""
    day, phase = key.split("|")
    tags = {"dagster/partition": key, "dagster/partition/date": day, "dagster/partition/phase": phase}
    data = graphql(url, CHECK, {"p": {
        "selector": {"repositoryLocationName": "cass_pipelines", "repositoryName": "__repository__",
                     "pipelineName": "__ASSET_JOB", "assetSelection": [],
                     "assetCheckSelection": [{"assetKey": {"path": ["phase_work"]}, "name": "actions_succeeded"}]},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}}})
    result = data["launchPipelineExecution"]
    if result["__typename"] != "LaunchRunSuccess":
        return {"launched": False, "error": result}
    run_id, started = result["run"]["runId"], time.perf_counter()
    while time.perf_counter() - started < deadline_s:
        [run] = [r for r in run_records(env) if r["run_id"] == run_id]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return {"launched": True, "partition": key, "status": run["status"],
                    "seconds": round(time.perf_counter() - started, 1)}
        time.sleep(3)
    return {"launched": True, "partition": key, "status": "not finished"}


def cli_runs(base: Path, keys: list[str]) -> dict:
    """The same partitions with `run-day --date D --no-journal`, day by day: like the UI's instance (whose
    idle_memory_sensor summarises the sample's idle conversations first), the first day starts with
    the memory catch-up, so both homes plan from the same memory."""
    env = home_env(base)
    walls = {}
    for day in dict.fromkeys(k.split("|")[0] for k in keys):
        t0 = time.perf_counter()
        subprocess.run([*CLI, "run-day", "--date", day, "--no-journal", "--json"], env=env, check=True,
                       capture_output=True, timeout=3600)
        walls[day] = round(time.perf_counter() - t0, 2)
    runs = [r for r in run_records(env) if r["partition"] in keys]
    return {"runs": runs, "day_process_wall_s": walls, "plan_revisions": plan_revisions(env)}


def overlaps(runs: list[dict]) -> list[list[str]]:
    out = []
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            if a["start"] < b["end"] and b["start"] < a["end"]:
                out.append([a["partition"] or a["run_id"], b["partition"] or b["run_id"]])
    return out


def backfill_figures(bf: dict, keys: list[str]) -> dict:
    t0 = bf.pop("launched_at")
    runs = sorted((r for r in bf["runs"] if r["start"]), key=lambda r: r["start"])
    shown = [{"partition": r["partition"], "status": r["status"], "queued_s": round(r["created"] - t0, 1),
              "start_s": round(r["start"] - t0, 1), "end_s": round(r["end"] - t0, 1),
              "duration_s": round(r["end"] - r["start"], 2)} for r in runs]
    return {"webserver_ready_s": bf["webserver_ready_s"], "runs": shown, "_runs": runs,
            "in_day_order": [r["partition"] for r in runs] == keys,
            "all_succeeded": all(r["status"] == "SUCCESS" for r in runs) and len(runs) == len(keys),
            # every run of the instance (the daemon's sensors launch memory_job runs too)
            "other_runs": [r["partition"] or "(memory or other job)" for r in bf["all_runs"]
                           if r["run_id"] not in {x["run_id"] for x in runs}],
            "overlaps": overlaps([r for r in bf["all_runs"] if r["start"] and r["end"]]),
            "plan_revisions": bf["plan_revisions"],
            "first_start_after_launch_s": shown[0]["start_s"] if shown else None,
            "last_end_after_launch_s": shown[-1]["end_s"] if shown else None,
            "check_from_ui": bf["check"]}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--deadline", type=float, default=3600, help="seconds for the webserver and the backfill")
    parser.add_argument("--launchers", default="warm", help="warm (the shipped one) and/or default (Dagster's)")
    args = parser.parse_args(argv)
    launchers = args.launchers.split(",")
    last = date.today() - timedelta(days=2)      # the days before yesterday: the sample's idle past
    days = [last - timedelta(days=n) for n in reversed(range(args.days))]
    keys = [f"{d}|{p}" for d in days for p in PHASES]
    machine = machine_before()
    with tempfile.TemporaryDirectory(prefix="cass-bench-backfill-") as tmp:
        backfills = {}
        for launcher in launchers:
            (Path(tmp) / f"ui-{launcher}").mkdir()
            backfills[launcher] = backfill(Path(tmp) / f"ui-{launcher}", keys, args.deadline, launcher)
        (Path(tmp) / "cli").mkdir()
        cli = cli_runs(Path(tmp) / "cli", keys)
    figures = {launcher: backfill_figures(bf, keys) for launcher, bf in backfills.items()}
    runs = figures[launchers[0]].pop("_runs")
    for other in launchers[1:]:
        figures[other].pop("_runs")
    cli_duration = {r["partition"]: r["end"] - r["start"] for r in cli["runs"]}
    ratio = {r["partition"]: round((r["end"] - r["start"]) / cli_duration[r["partition"]], 2) for r in runs}
    print(json.dumps({
        "bench": "backfill", "days": [d.isoformat() for d in days], "partitions": len(keys),
        "machine": machine_after(machine), "launcher": launchers[0],
        "backfill": figures[launchers[0]],
        **{f"backfill_{other}_launcher": figures[other] for other in launchers[1:]},
        "cli": {"runs": [{"partition": r["partition"], "duration_s": round(r["end"] - r["start"], 2)}
                         for r in cli["runs"]],
                "day_process_wall_s": cli["day_process_wall_s"], "plan_revisions": cli["plan_revisions"]},
        "sum_of_run_durations_s": {"backfill": round(sum(r["end"] - r["start"] for r in runs), 1),
                                   "cli": round(sum(cli_duration.values()), 1)},
        "ratio_to_cli": ratio, "ratio_to_cli_max": max(ratio.values()) if ratio else None,
        "ratio_to_cli_median": sorted(ratio.values())[len(ratio) // 2] if ratio else None,
    }, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
