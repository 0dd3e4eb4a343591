"""`cass-pipelines metrics`: Prometheus metrics from the store, read-only.

Each scrape opens the DuckDB file read-only for one short session (all queries, then close). A run
holding the file is never waited for beyond a short deadline: the scrape then serves the last good
figures and says so in `cass_metrics_store_up 0` and `cass_metrics_last_read_timestamp_seconds`.
Today's gauges follow the agent's timezone; ledger totals are counters over the whole ledger.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import datetime
from typing import Iterator

import duckdb
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from cass_pipelines.domain.batching import UnusedAnswer
from cass_pipelines.domain.categories import PHASES
from cass_pipelines.domain.clock import Clock
from cass_pipelines.domain.phases import phase_at, phase_window
from cass_pipelines.domain.settings import Settings
from cass_pipelines.store.db import Store
from cass_pipelines.store.metrics import snapshot

READ_DEADLINE_S = 0.5     # how long a scrape may wait for a run to let go of the file
# Jobs whose finished runs are counted: every job of the code location (tests/test_metrics.py holds it to
# that), and `__ASSET_JOB`, which runs the UI's Materialize and backfills.
JOBS = ("phase_job", "journal_job", "memory_job", "manual_work_job", "week_job", "week_journal_job", "approval_job",
        "dead_letter_retry_job", "__ASSET_JOB")
RUN_STATUSES = ("SUCCESS", "FAILURE", "CANCELED")
TOKEN_KINDS = ("input", "output", "cache_creation", "cache_read")


@contextmanager
def _read_only(path: str, deadline_s: float) -> Iterator[duckdb.DuckDBPyConnection]:
    started = time.perf_counter()
    while True:
        try:
            conn = duckdb.connect(path, read_only=True)
            break
        except duckdb.Error as exc:
            if "lock" not in str(exc).lower() or time.perf_counter() - started >= deadline_s:
                raise
            time.sleep(0.02)
    try:
        yield conn
    finally:
        conn.close()


def _gauge(name: str, doc: str, labels: list[str], rows) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        family.add_metric(values, value)
    return family


def _counter(name: str, doc: str, labels: list[str], rows) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        family.add_metric(values, value)
    return family


def store_families(snap: dict) -> list:
    """The families that depend only on what was read."""
    b = snap["budget"]
    cats = sorted(b["categories"].items())
    ledger = snap["ledger"]
    families = [
        _gauge("cass_work_units_today", "Today's work units by status, category and template.",
               ["status", "category", "template"],
               [([r["status"], r["category"], r["template_id"]], r["n"]) for r in snap["units_today"]]),
        _gauge("cass_work_units", "Work units of every day by status, category and template.",
               ["status", "category", "template"],
               [([r["status"], r["category"], r["template_id"]], r["n"]) for r in snap["units_all"]]),
        _gauge("cass_action_runs", "Action executions by action and status.", ["action", "status"],
               [([r["action_id"], r["status"]], r["n"]) for r in snap["actions"]]),
        _counter("cass_llm_calls", "LLM calls recorded in the ledger.", ["category", "model", "offline"],
                 [([r["category"], r["model"], str(bool(r["offline"])).lower()], r["calls"]) for r in ledger]),
        _counter("cass_llm_cost_usd", "LLM cost in USD recorded in the ledger.", ["category", "model", "offline"],
                 [([r["category"], r["model"], str(bool(r["offline"])).lower()], float(r["cost_usd"])) for r in ledger]),
        _counter("cass_llm_tokens", "LLM tokens by kind (input, output, cache_creation, cache_read).",
                 ["category", "model", "kind"],
                 [([r["category"], r["model"], kind], int(r[kind] or 0)) for r in ledger for kind in TOKEN_KINDS]),
        _gauge("cass_budget_limit_usd", "Today's budget limit per category ('all' = the daily limit).",
               ["category"], [(["all"], b["daily_limit_usd"])] + [([c], v["limit_usd"]) for c, v in cats]),
        _gauge("cass_budget_spent_usd", "Today's spend per category.", ["category"],
               [(["all"], b["spent_usd"])] + [([c], v["spent_usd"]) for c, v in cats]),
        _gauge("cass_budget_reserved_usd", "Today's reservations held for calls in flight, per category.",
               ["category"], [(["all"], b["reserved_usd"])] + [([c], v["reserved_usd"]) for c, v in cats]),
        _gauge("cass_budget_remaining_usd", "Today's budget left per category.", ["category"],
               [(["all"], b["remaining_usd"])] + [([c], v["remaining_usd"]) for c, v in cats]),
        _gauge("cass_budget_exhausted", "1 when today's budget is exhausted.", [], [([], int(b["exhausted"]))]),
        _gauge("cass_paused", "1 while new work is paused (all categories).", [], [([], int(bool(b["paused"])))]),
        _gauge("cass_dead_letters_unresolved", "Failed actions not yet resolved.", [],
               [([], snap["dead_letters"]["unresolved"])]),
        _counter("cass_dead_letters", "Failed actions recorded as dead letters.", [],
                 [([], snap["dead_letters"]["total"])]),
        _gauge("cass_batch_requests", "Requests sent through Message Batches, by state (every day).", ["state"],
               [([r["state"]], r["n"]) for r in snap["batches"]]),
        _gauge("cass_batch_answers_unused", "Batched answers paid for and not used: work=waiting (their work "
               "resumes to take them), work=abandoned (their unit ended or was offered again without them).",
               ["work"], [([work], v["n"]) for work, v in snap["unused_answers"].items()]),
        _gauge("cass_batch_answers_unused_usd", "What the batched answers paid for and not used cost.", ["work"],
               [([work], v["usd"]) for work, v in snap["unused_answers"].items()]),
    ]
    hist = HistogramMetricFamily("cass_action_duration_seconds", "Wall time of finished actions.",
                                 labels=["action"])
    for r in snap["durations"]:
        hist.add_metric([r["action_id"]], [(str(le), n) for le, n in r["buckets"]] + [("+Inf", r["count"])],
                        sum_value=r["sum"])
    return families + [hist]


def clock_families(snap: dict, settings: Settings, now: datetime) -> list:
    """The families that depend on the time of the scrape as well."""
    day, phase = phase_at(now, settings)
    started = phase_window(day, phase, settings)[0]
    plan_at = snap["plan_at"]
    oldest = snap["unused_answers"][UnusedAnswer.WAITING]["oldest"]
    return [
        _gauge("cass_plan_age_seconds", "Age of today's latest plan revision (absent: no plan yet).", [],
               [([], (now - plan_at).total_seconds())] if plan_at else []),
        _gauge("cass_plan_present", "1 when today has a plan.", [], [([], int(plan_at is not None))]),
        _gauge("cass_batch_answers_waiting_oldest_seconds", "Since the oldest batched answer still waiting for "
               "its work to resume ended (0: none waits).", [],
               [([], (now - oldest).total_seconds() if oldest else 0.0)]),
        _gauge("cass_current_phase_elapsed_seconds", "Seconds since the current phase started.", ["phase"],
               [([phase], (now - started).total_seconds())]),
        _gauge("cass_phase_opened", "1 when the phase of today has been opened by a run.", ["phase"],
               [([p], int(p in snap["opened_phases"])) for p in PHASES]),
    ]


def run_families(instance) -> list:
    """Finished Dagster runs by job and status (the instance's own storage, not the DuckDB file)."""
    import dagster as dg

    return [_gauge("cass_dagster_runs", "Finished Dagster runs by job and status.", ["job", "status"],
                   [([job, status], instance.get_runs_count(dg.RunsFilter(
                       job_name=job, statuses=[dg.DagsterRunStatus(status)]))) for job in JOBS
                    for status in RUN_STATUSES])]


class StoreCollector(Collector):
    def __init__(self, settings: Settings, clock: Clock, deadline_s: float = READ_DEADLINE_S, instance=None):
        self.settings, self.clock, self.instance = settings, clock, instance
        path = str(settings.db_path)
        self.store = Store(path, connect_fn=lambda: _read_only(path, deadline_s))
        self._lock = threading.Lock()
        self._snap: dict | None = None
        self._families: list = []
        self._read_at: float | None = None

    def collect(self):
        with self._lock:
            now = self.clock.now()
            error = ""
            try:
                snap = snapshot(self.store, self.settings, phase_at(now, self.settings)[0])
                self._snap, self._families, self._read_at = snap, store_families(snap), now.timestamp()
            except duckdb.Error as exc:     # busy (a run holds the file) or not there yet: keep the last figures
                error = " ".join(str(exc).split())[:200]
            yield from self._families
            if self.instance is not None:
                yield from run_families(self.instance)
            if self._snap is not None:
                yield from clock_families(self._snap, self.settings, now)
            yield _gauge("cass_metrics_store_up", "1 when this scrape read the store; 0 when it served the "
                         "last good figures (the file was busy or missing).", [], [([], int(not error))])
            if self._read_at is not None:
                yield _gauge("cass_metrics_last_read_timestamp_seconds", "When the store was last read.", [],
                             [([], self._read_at)])


def registry_for(settings: Settings, clock: Clock, deadline_s: float = READ_DEADLINE_S,
                 instance=None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(settings, clock, deadline_s, instance))
    return registry
