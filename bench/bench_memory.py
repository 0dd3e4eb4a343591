"""memory_job as `run-day` runs it: the catch-up of the sample's 56 idle conversations, then a no-op run
(nothing new to summarise), then Dagster's own floor (a job of one empty op on the same instance), each
catch-up in a fresh process and CASS_HOME.

    .venv/bin/python bench/bench_memory.py                          # offline and at 2 s loopback latency
    .venv/bin/python bench/bench_memory.py --latency 0,2 --before /path/to/old/checkout
    .venv/bin/python bench/bench_memory.py --batch-work on,off      # memory calls batched (shipped) or not

Figures (JSON on stdout), per code (this checkout, and with --before that one, first on PYTHONPATH),
latency and batch mode:
- `catchup`: wall and CPU seconds of the run, LLM calls, conversations summarised, time the API was
  working (`llm_busy_s`: an interactive call in flight or a batched request's batch running), DuckDB opens (every store.db.connect: one file lock window) and opens per
  summarised conversation.
- `noop`: the next memory_job run, nothing to summarise (median of 3): wall, CPU, opens, LLM calls.
- `floor`: a job of one op that does nothing, on the same instance (median of 3): what any run costs;
  `floor_asset`: the same for a job materialising one asset that does nothing (asset events included).
With a latency, the API is tests/fake_anthropic.py's server answering each message after that delay,
and each message batch ending that long after it was created (so batched calls wait as long as
interactive ones; the looks at a batch, at once, after 0.25 s and then each pause 1.5 times the last up to `batch_poll_s`,
decide how long after its end a batched call has its answer).
Offline (latency 0) calls and batches answer at once. `api_requests` (with a latency): what the
loopback API was asked by the catch-up (the later runs ask nothing): messages posted, token countings,
batches created, looks at a batch's status. `sdk_import`: importing the anthropic SDK, done
before the catch-up and measured apart (every process that calls the API pays it once: a run worker
launched by the daemon per run, run-day once for the day).
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
from pathlib import Path

from loopback import api_wait_intervals, delayed_api, requests_to
from machine import count_store_opens, machine_after, machine_before, measured, union_s

ROOT = Path(__file__).resolve().parent.parent


def child(latency: float) -> None:
    """Catch-up, no-op runs and the floor in this process; prints one JSON line."""
    opens = count_store_opens()
    import dagster as dg

    from cass_pipelines.cli.main import main as cli
    from cass_pipelines.definitions import build_defs
    from cass_pipelines.execution import QUIET, instance_for, run_memory
    from cass_pipelines.services.runtime import open_runtime

    with contextlib.redirect_stdout(sys.stderr):   # stdout carries only the JSON figures
        assert cli(["init", "--sample"]) == 0
    sdk_import = None
    if os.environ["CASS_LLM"] == "anthropic":   # a run worker pays it once per process, not per call
        with measured() as span:
            import anthropic  # noqa: F401
        sdk_import = span.figures()
    rt = open_runtime()
    instance, defs = instance_for(rt.settings), build_defs(rt.settings, rt.registry)

    def run(launch) -> dict:
        before = opens[0]
        with measured() as span:
            result = launch()
        assert result.success, result
        out = {**span.figures(), "duckdb_opens": opens[0] - before}
        out["llm_calls"] = rt.store.scalar("SELECT count(*) FROM llm_ledger WHERE run_id = ?", [result.run_id])
        out["llm_busy_s"] = round(union_s(api_wait_intervals(rt.store, result.run_id, latency)), 3)
        return out

    def median_of(runs: list[dict]) -> dict:
        return {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}

    catchup = run(lambda: run_memory(defs, instance))
    summarised = rt.store.scalar("SELECT count(DISTINCT conversation_id) FROM conversation_summaries")
    catchup.update(conversations=summarised, opens_per_conversation=round(catchup["duckdb_opens"] / summarised, 2))
    noop = median_of([run(lambda: run_memory(defs, instance)) for _ in range(3)])

    @dg.op
    def nothing() -> None:
        pass

    @dg.job(executor_def=dg.in_process_executor)
    def empty_job():
        nothing()

    @dg.asset
    def nothing_asset() -> None:
        pass

    floor = median_of([run(lambda: empty_job.execute_in_process(instance=instance, run_config=QUIET))
                       for _ in range(3)])
    floor_asset = median_of([run(lambda: dg.materialize([nothing_asset], instance=instance, run_config=QUIET))
                             for _ in range(3)])
    print(json.dumps({"batch_work": rt.settings.batch_work, "sdk_import": sdk_import, "catchup": catchup,
                      "noop": noop, "floor": floor, "floor_asset": floor_asset}))


def launch(code: str | None, latency: float, batch_work: bool, tmp: Path) -> dict:
    home = tmp / f"{time.perf_counter_ns()}"
    (home / "cass").mkdir(parents=True)
    (home / "dagster").mkdir()
    (home / "cass" / "cass.toml").write_text(f"batch_work = {str(batch_work).lower()}\n")   # init keeps it
    env = {k: v for k, v in os.environ.items() if k not in ("CASS_ACTIONS_FILE", "ANTHROPIC_API_KEY", "PYTHONPATH")}
    env.update(CASS_HOME=str(home / "cass"), DAGSTER_HOME=str(home / "dagster"),
               # this checkout's code unless another's is given (the venv's editable install may be another checkout)
               PYTHONPATH=os.pathsep.join([code or str(ROOT), str(ROOT / "bench")]))
    with delayed_api(latency, batch_delay_s=latency) if latency else contextlib.nullcontext(
            {"CASS_LLM": "offline"}) as api:
        proc = subprocess.run([sys.executable, __file__, "--child", "--latency", str(latency)], env={**env, **api},
                              capture_output=True, text=True)
        asked = {"api_requests": requests_to(api)} if latency else {}
    if proc.returncode:
        sys.exit(f"memory bench failed ({code or 'this checkout'}, latency {latency}):\n{proc.stderr[-4000:]}")
    return {"latency_s": latency, **json.loads(proc.stdout.strip().splitlines()[-1]), **asked}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", default="0,2", help="loopback API delays per request, seconds (0: offline)")
    parser.add_argument("--batch-work", default="on", help="on (shipped) and/or off: memory calls as Message Batches")
    parser.add_argument("--before", help="a checkout's directory to compare with (put first on PYTHONPATH)")
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        return child(float(args.latency))
    machine = machine_before()
    codes = {"after": None, **({"before": str(Path(args.before).resolve())} if args.before else {})}
    out: dict = {"bench": "memory"}
    with tempfile.TemporaryDirectory(prefix="cass-bench-memory-") as tmp:
        for name, code in codes.items():
            out[name] = [launch(code, float(latency), mode == "on", Path(tmp))
                         for latency in args.latency.split(",") for mode in args.batch_work.split(",")]
    out["machine"] = machine_after(machine)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
