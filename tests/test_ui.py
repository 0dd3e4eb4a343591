"""`cass-pipelines ui` starts a real `dagster dev` (webserver, daemon, code server) on 127.0.0.1 for this
CASS_HOME. Checked through the webserver's GraphQL API (what the UI's pages read) and, where Playwright
and Debian's chromium are installed, in a real browser with screenshots kept under
test-artifacts/ui/ (the server: tests/ui_server.py)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import NOW, SAMPLE_DAY
from ui_server import graphql, ui_server

from cass_pipelines.domain.clock import NOW_ENV

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "ui"
STARTUP_DEADLINE_S = 180
ASSETS = {"conversations", "self_model", "phase_plan", "phase_work", "work_summaries", "cost_records",
          "daily_journal", "conversation_summaries", "weekly_intention", "weekly_journal"}
SCHEDULES = {"morning_schedule", "afternoon_schedule", "evening_schedule", "night_schedule", "journal_schedule",
             "weekly_intention_schedule", "weekly_journal_schedule"}
REPO = {"repositoryName": "__repository__", "repositoryLocationName": "cass_pipelines"}


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    base = tmp_path_factory.mktemp("ui")
    env = {**os.environ, "CASS_HOME": str(base / "cass"), "DAGSTER_HOME": str(base / "dagster"), "CASS_LLM": "offline",
           NOW_ENV: NOW.isoformat()}
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "CASS_LOG_FORMAT"):
        env.pop(var, None)
    cli = [sys.executable, "-m", "cass_pipelines.cli.main"]
    subprocess.run([*cli, "init", "--sample"], env=env, check=True, capture_output=True, timeout=300)
    run = subprocess.run([*cli, "run-phase", "morning", "--date", SAMPLE_DAY.isoformat(), "--json"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    run_id = json.loads(run.stdout)["runs"][0]["run_id"]
    with ui_server(env, base / "dagster-dev.log", STARTUP_DEADLINE_S) as url:
        yield {"url": url, "run_id": run_id, "dagster_home": base / "dagster"}


def test_ui_lists_cli_runs_under_their_job_and_runs_every_schedule(ui):
    data = graphql(ui["url"], """query($sel: PipelineSelector!) { pipelineOrError(params: $sel) {
        ... on Pipeline { runs { runId status } } } }""", {"sel": {**REPO, "pipelineName": "phase_job"}})
    assert ui["run_id"] in [r["runId"] for r in data["pipelineOrError"]["runs"]]   # the job's Runs tab
    data = graphql(ui["url"], """query($sel: RepositorySelector!) { schedulesOrError(repositorySelector: $sel) {
        ... on Schedules { results { name scheduleState { status } } } } }""", {"sel": REPO})
    states = {s["name"]: s["scheduleState"]["status"] for s in data["schedulesOrError"]["results"]}
    assert states == {name: "RUNNING" for name in SCHEDULES}
    data = graphql(ui["url"], "{ assetNodes { assetKey { path } } }")
    assert {n["assetKey"]["path"][-1] for n in data["assetNodes"]} == ASSETS
    assert (ui["dagster_home"] / "dagster.yaml").exists()


def test_a_run_launched_from_the_ui_runs_in_a_fork_of_the_warm_run_worker(ui):
    """The UI's Launch: the run waits in the queue, the daemon launches it with the shipped launcher, and it runs
    in a process forked from the warm run worker, watched by its pid (cass_pipelines/run_launcher.py)."""
    launched = graphql(ui["url"], """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
        __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
                       {"params": {"selector": {**REPO, "pipelineName": "memory_job"}, "runConfigData": {}}})
    assert launched["launchRun"]["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["launchRun"]["run"]["runId"]
    deadline = time.monotonic() + 120
    while True:
        run = graphql(ui["url"], """query($id: ID!) { runOrError(runId: $id) { ... on Run { status
            tags { key value } } } }""", {"id": run_id})["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        assert time.monotonic() < deadline, run["status"]
        time.sleep(0.5)
    assert run["status"] == "SUCCESS"
    tags = {t["key"]: t["value"] for t in run["tags"]}
    events = graphql(ui["url"], """query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection {
        events { __typename ... on MessageEvent { message } } } } }""", {"id": run_id})["logsForRun"]["events"]
    assert any(f"as pid {tags['cass/worker_pid']}" in e.get("message", "") and "Forked from the run worker" in
               e.get("message", "") for e in events)


def test_ui_in_a_real_browser(ui):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{ui['url']}/locations/cass_pipelines/asset-groups/day")      # the day's asset graph
            for name in ("phase_plan", "phase_work", "work_summaries", "cost_records", "daily_journal"):
                page.get_by_text(name, exact=True).first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "asset-graph-day.png"))
            page.goto(f"{ui['url']}/assets")                                        # the catalog: every asset
            for name in sorted(ASSETS):
                page.get_by_text(name, exact=True).first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "asset-catalog.png"))
            page.goto(f"{ui['url']}/assets/phase_plan?view=partitions&partition={SAMPLE_DAY}|morning")
            page.get_by_text(f"{SAMPLE_DAY}|morning", exact=True).first.wait_for()
            page.get_by_text("[Show Markdown]").first.click()                        # the plan table
            page.get_by_text("Day intention").first.wait_for()
            page.get_by_role("columnheader", name="template").first.wait_for()
            page.get_by_role("cell", name="morning", exact=True).first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "phase-plan-partition.png"))
            page.goto(f"{ui['url']}/locations/cass_pipelines/jobs/phase_job/runs")   # the job's Runs tab
            page.get_by_text(ui["run_id"][:8]).first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "phase-job-runs.png"))
            page.goto(f"{ui['url']}/automation")
            for name in SCHEDULES:
                page.get_by_text(name, exact=True).first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "schedules.png"))
        finally:
            browser.close()
