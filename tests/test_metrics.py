"""`cass-pipelines metrics`: scraped over HTTP on 127.0.0.1 from a separate process and parsed with
prometheus-client's own parser; figures equal what the store holds; a busy file never blocks a scrape."""
import os
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta

import duckdb
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import SAMPLE_DAY

from cass_pipelines.cli.main import main
from cass_pipelines.domain.clock import clock_from_env
from cass_pipelines.services.runtime import open_runtime

DAY = SAMPLE_DAY


def scrape(url: str) -> tuple[dict, float]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    elapsed = time.perf_counter() - started
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, elapsed


def total(samples: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == x for k, x in labels.items()))


@pytest.fixture
def exporter(sample_home):
    proc = subprocess.Popen([sys.executable, "-m", "cass_pipelines.cli.main", "metrics", "--port", "0"],
                            env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "serving metrics" in line, proc.stderr.read() if proc.poll() is not None else line
        yield line.split(" on ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_metrics_scrape_matches_the_store_and_survives_a_busy_file(sample_home, exporter, capsys):
    assert main(["run-phase", "morning", "--date", DAY.isoformat(), "--json"]) == 0
    capsys.readouterr()
    rt = open_runtime()
    # Two batched requests: one collected (paid: a ledger row) and not yet used, one still in its batch.
    paid = rt.store.one("SELECT request_id, cost_usd FROM llm_ledger LIMIT 1")
    rt.store.execute("""INSERT INTO llm_batches (custom_id, request_key, batch_id, state, used, reservation_id, date,
        category, priority, model, request, submitted_at, request_id) VALUES
        ('c1', 'k1', 'b1', 'collected', FALSE, 'r1', ?, 'memory', 'normal', 'm', '{}', now(), ?),
        ('c2', 'k2', 'b1', 'submitted', FALSE, 'r2', ?, 'memory', 'normal', 'm', '{}', now(), NULL)""",
                     [DAY, paid["request_id"], DAY])
    rt.store.execute("UPDATE llm_batches SET ended_at = ? WHERE custom_id = 'c1'",   # its batch ended 40 h ago
                     [clock_from_env().now() - timedelta(hours=40)])
    # And one paid for a unit that completed without it: abandoned.
    done = rt.store.scalar("SELECT id FROM work_units WHERE status = 'completed' LIMIT 1")
    paid_too = rt.store.one("SELECT request_id, cost_usd FROM llm_ledger WHERE request_id <> ? LIMIT 1",
                            [paid["request_id"]])
    rt.store.execute("""INSERT INTO llm_batches (custom_id, request_key, batch_id, state, used, reservation_id, date,
        category, priority, model, request, submitted_at, request_id, work_unit_id, action_id) VALUES
        ('c3', 'k3', 'b1', 'collected', FALSE, 'r3', ?, 'memory', 'normal', 'm', '{}', now(), ?, ?, 'a')""",
                     [DAY, paid_too["request_id"], done])
    samples, _ = scrape(exporter)
    ledger = rt.store.one("SELECT count(*) AS calls, sum(cost_usd) AS cost, sum(input_tokens) AS input, "
                          "sum(cache_read_input_tokens) AS cache_read FROM llm_ledger")
    assert ledger["calls"] > 0
    assert total(samples, "cass_llm_calls_total") == ledger["calls"]
    assert total(samples, "cass_llm_cost_usd_total") == pytest.approx(ledger["cost"])
    assert total(samples, "cass_llm_tokens_total", kind="input") == ledger["input"]
    assert total(samples, "cass_llm_tokens_total", kind="cache_read") == ledger["cache_read"]
    units = rt.store.all("SELECT status, count(*) AS n FROM work_units GROUP BY status")
    for row in units:
        assert total(samples, "cass_work_units", status=row["status"]) == row["n"]
    finished = rt.store.scalar("SELECT count(*) FROM action_runs WHERE finished_at IS NOT NULL")
    assert finished and total(samples, "cass_action_duration_seconds_count") == finished
    assert total(samples, "cass_action_duration_seconds_bucket", le="+Inf") == finished
    assert samples[("cass_budget_limit_usd", (("category", "all"),))] == rt.settings.daily_budget_usd
    for category in ("research", "memory", "creative"):
        key = (("category", category),)
        assert samples[("cass_budget_remaining_usd", key)] == pytest.approx(
            samples[("cass_budget_limit_usd", key)] - samples[("cass_budget_spent_usd", key)]
            - samples[("cass_budget_reserved_usd", key)])
    assert ("cass_dead_letters_unresolved", ()) in samples
    assert samples[("cass_batch_requests", (("state", "collected"),))] == 2
    assert samples[("cass_batch_requests", (("state", "submitted"),))] == 1
    assert samples[("cass_batch_answers_unused", (("work", "waiting"),))] == 1     # paid, its work resumes
    assert samples[("cass_batch_answers_unused", (("work", "abandoned"),))] == 1
    assert samples[("cass_batch_answers_unused_usd", (("work", "abandoned"),))] == pytest.approx(paid_too["cost_usd"])
    assert samples[("cass_batch_answers_unused_usd", (("work", "waiting"),))] == pytest.approx(paid["cost_usd"])
    # (each process's clock is shifted to the injected "today" from its own start: they differ by minutes)
    assert 39 * 3600 < samples[("cass_batch_answers_waiting_oldest_seconds", ())] <= 40 * 3600 + 60
    assert samples[("cass_metrics_store_up", ())] == 1
    assert samples[("cass_phase_opened", (("phase", "morning"),))] in (0, 1)
    assert samples[("cass_dagster_runs", (("job", "phase_job"), ("status", "SUCCESS")))] == 1

    # A run holds the file for writing: the scrape answers quickly with the last good figures.
    holder = duckdb.connect(str(rt.settings.db_path))
    try:
        busy, elapsed = scrape(exporter)
    finally:
        holder.close()
    assert busy[("cass_metrics_store_up", ())] == 0
    assert total(busy, "cass_llm_calls_total") == ledger["calls"]
    assert elapsed < 5, elapsed
    again, _ = scrape(exporter)
    assert again[("cass_metrics_store_up", ())] == 1


def test_metrics_once_prints_the_exposition(sample_home, capsys):
    assert main(["metrics", "--once"]) == 0
    families = {f.name for f in text_string_to_metric_families(capsys.readouterr().out)}
    assert {"cass_work_units_today", "cass_llm_calls", "cass_llm_cost_usd", "cass_llm_tokens", "cass_budget_spent_usd",
            "cass_budget_remaining_usd", "cass_dead_letters", "cass_plan_present",
            "cass_action_duration_seconds", "cass_metrics_store_up", "cass_dagster_runs"} <= families


def test_metrics_refuses_an_uninitialised_home(cass_env, capsys):
    assert main(["metrics", "--once"]) != 0
    assert "init" in capsys.readouterr().err


def test_every_job_of_the_code_location_has_its_runs_counted(cass_env):
    """cass_dagster_runs counts finished runs per job; a job it does not name would fail unseen."""
    from cass_pipelines.config.registry import load_registry
    from cass_pipelines.config.settings import load_settings
    from cass_pipelines.definitions import build_defs
    from cass_pipelines.metrics import JOBS

    defs = build_defs(load_settings(), load_registry(None))
    jobs = {job.name for job in defs.get_repository_def().get_all_jobs()}
    assert jobs <= set(JOBS), sorted(jobs - set(JOBS))
