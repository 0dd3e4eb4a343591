"""The CLI, the schedules' checks and a running day share one DuckDB file across processes: each
opens it briefly and retries while another holds it, so all of them work at once."""
import json
import os
import subprocess
import sys
import time

from support import SAMPLE_DAY

DAY = SAMPLE_DAY.isoformat()
CLI = [sys.executable, "-m", "cass_pipelines.cli.main"]


def test_reads_from_other_processes_succeed_while_a_day_runs(sample_home):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    day = subprocess.Popen([*CLI, "run-day", "--date", DAY, "--json"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reads = []
    deadline = time.monotonic() + 240
    while day.poll() is None and time.monotonic() < deadline:
        for command in (["budget", "--date", DAY], ["plan", "--date", DAY], ["status"]):
            done = subprocess.run([*CLI, *command, "--json"], env=env, capture_output=True, text=True, timeout=180)
            reads.append((command[0], done.returncode, done.stderr[-300:]))
            assert done.returncode == 0, done.stderr
            json.loads(done.stdout)
    out, err = day.communicate(timeout=240)
    assert day.returncode == 0, err[-2000:]
    assert all(r["success"] for r in json.loads(out)["runs"])
    assert len(reads) >= 3, "the day finished before any concurrent read ran"
