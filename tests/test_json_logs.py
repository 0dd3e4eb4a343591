"""CASS_LOG_FORMAT=json: every stderr line of the CLI and of its runs is one JSON object, with run id,
partition, unit and action, and no secret from the environment."""
import json
import os
import subprocess
import sys

from support import SAMPLE_DAY

DAY = SAMPLE_DAY
SECRET = "sk-ant-test-" + "x7" * 12


def cli(args: list[str], **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cass_pipelines.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, "CASS_LOG_FORMAT": "json", **env}, timeout=300)


def records(stderr: str) -> list[dict]:
    lines = stderr.splitlines()
    assert lines
    parsed = [json.loads(line) for line in lines]           # every line, or the test fails here
    assert all(isinstance(r, dict) and {"ts", "level", "message"} <= set(r) for r in parsed)
    return parsed


def test_a_phase_run_logs_one_json_object_per_line(sample_home):
    done = cli(["run-phase", "morning", "--date", DAY.isoformat(), "--json"], CASS_LOG_LEVEL="INFO",
               ANTHROPIC_API_KEY=SECRET)
    assert done.returncode == 0, done.stderr[-2000:]
    json.loads(done.stdout)                                  # the report stays on stdout
    logs = records(done.stderr)
    actions = [r for r in logs if r.get("action")]
    assert actions, logs
    assert all(r["run_id"] and r["partition"] == f"{DAY}|morning" and r["unit"] and r["job"] == "phase_job"
               for r in actions)
    assert {r["run_id"] for r in logs if "run_id" in r} == {json.loads(done.stdout)["runs"][0]["run_id"]}
    assert SECRET not in done.stderr


def test_errors_are_json_and_secrets_are_redacted(sample_home):
    done = cli(["budget"], ANTHROPIC_API_KEY=SECRET, CASS_DAILY_BUDGET_USD=SECRET)
    assert done.returncode != 0
    [record] = records(done.stderr)
    assert record["level"] == "ERROR" and "CASS_DAILY_BUDGET_USD" in record["message"]
    assert "[redacted]" in record["message"] and SECRET not in done.stderr


def test_text_logs_stay_text_by_default(sample_home):
    done = cli(["budget"], CASS_LOG_FORMAT="", CASS_DAILY_BUDGET_USD="lots")
    assert done.returncode != 0 and not done.stderr.lstrip().startswith("{")
