"""budget_sensor and dead_letter_sensor, evaluated through Dagster's sensor context: alerts once,
cancels the day's queued phase runs at exhaustion, releases holds of finished runs, and skips
quickly (not after ~100 s) while another process holds the DuckDB file."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone

import dagster as dg
import pytest
from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.test_utils import create_run_for_test
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from support import ledger_row

from cass_pipelines.defs.budget.batch_sensor import RESUME_TAG
from cass_pipelines.defs.budget.sensors import build_budget_sensor
from cass_pipelines.defs.dead_letters.sensors import build_dead_letter_sensor
from cass_pipelines.defs.resources import CassResource, cass_resource
from cass_pipelines.domain.states import DeadLetterKind
from cass_pipelines.store import budget as sb
from cass_pipelines.store import dead_letters
from cass_pipelines.store.control import alerts

DAY = date(2026, 11, 26)
NOW = datetime(2026, 11, 26, 15, tzinfo=timezone.utc)




@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def cass(settings) -> CassResource:
    return cass_resource(settings, fixed_now=NOW.isoformat())


def tick(sensor, settings, instance, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"cass": cass(settings)}) as ctx:
        return sensor.evaluate_tick(ctx)


def phase_run(instance, status, day=None, **tags):
    """A phase_job run record in the instance (queued runs must name where their job lives)."""
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="cass_pipelines.definitions")), "__repository__"), "phase_job")
    return create_run_for_test(instance, job_name="phase_job", status=status, remote_job_origin=origin,
                               tags={**({"dagster/partition/date": day} if day else {}), **tags} or None)


def spend(store, settings, category, amount, tag=""):
    r = sb.reserve(store, day=DAY, category=category, amount_usd=amount, settings=settings, priority="normal",
                   now=NOW)
    sb.settle(store, r.id, ledger_row(f"req_{category}{tag}", amount, category), NOW)


def test_budget_sensor_alerts_once_cancels_queued_runs_and_releases_finished_holds(store, settings, instance):
    sensor = build_budget_sensor(settings)
    queued_today = phase_run(instance, dg.DagsterRunStatus.QUEUED, "2026-11-26")
    queued_tomorrow = phase_run(instance, dg.DagsterRunStatus.QUEUED, "2026-11-27")
    # A run resuming work whose batch ended: it uses answers already paid for.
    resume = phase_run(instance, dg.DagsterRunStatus.QUEUED, "2026-11-26", **{RESUME_TAG: "2026-11-26|morning|3"})
    finished = phase_run(instance, dg.DagsterRunStatus.FAILURE)
    crashed_hold = sb.reserve(store, day=DAY, category="journal", amount_usd=0.05, settings=settings,
                              priority="normal", run_id=finished.run_id, now=NOW)

    quiet = tick(sensor, settings, instance)
    assert "spent $0.0000 of $1.00" in quiet.skip_message and "ALERT" not in quiet.skip_message
    assert "released 1 reservation" in quiet.skip_message
    assert store.scalar("SELECT status FROM reservations WHERE id = ?", [crashed_hold.id]) == "abandoned"

    for category in ("research", "reflection", "growth", "memory", "curiosity"):
        spend(store, settings, category, settings.category_limit(category))   # $0.80: the soft threshold
    spend(store, settings, "creative", 0.05)                # creative can still pay for what it asked
    soft = tick(sensor, settings, instance, quiet.cursor)
    assert "ALERT" in soft.skip_message and "85% of the $1.00 daily budget" in soft.skip_message
    assert "EXHAUSTED" not in soft.skip_message

    spend(store, settings, "creative", 0.05, "_2")                               # $0.90: nothing fits
    out = tick(sensor, settings, instance, soft.cursor)
    assert "daily budget exhausted" in out.skip_message and "80%" not in out.skip_message
    assert f"cancelled 1 queued phase run(s): {queued_today.run_id}" in out.skip_message
    assert instance.get_run_by_id(queued_today.run_id).status == dg.DagsterRunStatus.CANCELED
    assert instance.get_run_by_id(queued_tomorrow.run_id).status == dg.DagsterRunStatus.QUEUED
    assert instance.get_run_by_id(resume.run_id).status == dg.DagsterRunStatus.QUEUED
    assert {a["kind"] for a in alerts(store, DAY)} == {"soft_limit", "exhausted"}

    again = tick(sensor, settings, instance, out.cursor)
    assert "ALERT" not in again.skip_message and "EXHAUSTED" in again.skip_message


def test_budget_sensor_skips_quickly_while_another_process_holds_the_database(store, settings, instance):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True);"
         " time.sleep(60)", str(settings.db_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        started = time.perf_counter()
        out = tick(build_budget_sensor(settings), settings, instance)
        elapsed = time.perf_counter() - started
        assert "database is busy" in out.skip_message
        assert elapsed < 10, f"the sensor blocked for {elapsed:.1f}s"
        dead = tick(build_dead_letter_sensor(), settings, instance)
        assert "database is busy" in dead.skip_message
    finally:
        holder.kill()
        holder.wait()
    assert "spent $0.0000" in tick(build_budget_sensor(settings), settings, instance).skip_message


def test_dead_letter_sensor_reports_each_new_dead_letter_once(store, settings, instance):
    sensor = build_dead_letter_sensor()
    first = tick(sensor, settings, instance)
    assert first.skip_message == "no new dead letters"
    dead_letters.add(store, dl_id="dl_1", kind=DeadLetterKind.ACTION, day=DAY, phase="morning",
                     work_unit_id="wu_1", action_id="research.search", run_id="abcdef123456",
                     error="ValueError: boom", now=NOW)
    out = tick(sensor, settings, instance, first.cursor)
    assert "1 new dead letter(s)" in out.skip_message and "research.search" in out.skip_message
    assert "ValueError: boom" in out.skip_message
    assert tick(sensor, settings, instance, out.cursor).skip_message == "no new dead letters"


def test_a_dead_letter_stamped_before_one_already_reported_is_still_reported_once(store, settings, instance):
    """A dead letter carries its run's stamp, not its insert's: the memory catch-up stamps a conversation it
    parks with its own start, minutes before (and its siblings' ids may sort either way), and another run's
    letter may be reported meanwhile. Each is reported once, whatever the order of stamps and inserts."""
    sensor = build_dead_letter_sensor()

    def parked(conversation_id: str, now) -> None:
        dead_letters.add(store, dl_id=f"conversation_{conversation_id}_3", kind=DeadLetterKind.CONVERSATION,
                         item_id=conversation_id, day=DAY, phase="morning", work_unit_id="wu_mem",
                         action_id="memory.summarize_idle", error="summary failed 3 times; parked", now=now)

    dead_letters.add(store, dl_id="wu_1_0_run2", kind=DeadLetterKind.ACTION, day=DAY, phase="morning",
                     work_unit_id="wu_1", action_id="research.search", run_id="run2", error="boom", now=NOW)
    first = tick(sensor, settings, instance)
    assert "1 new dead letter(s)" in first.skip_message
    parked("conv_9", NOW - timedelta(minutes=20))   # the catch-up started 20 minutes before
    second = tick(sensor, settings, instance, first.cursor)
    assert "1 new dead letter(s)" in second.skip_message and "conv_9" in second.skip_message
    parked("conv_10", NOW - timedelta(minutes=20))   # a sibling: same stamp, an id sorting before
    third = tick(sensor, settings, instance, second.cursor)
    assert "1 new dead letter(s)" in third.skip_message and "conv_10" in third.skip_message
    assert tick(sensor, settings, instance, third.cursor).skip_message == "no new dead letters"
    # A cursor of the earlier form (the last letter's [created_at, id]) goes on from there.
    old = json.dumps([NOW.isoformat(), "wu_1_0_run2"])
    assert "conv_9" in tick(sensor, settings, instance, old).skip_message


def test_the_reported_window_starts_a_day_before_the_newest_letter_whatever_the_offsets(store, settings, instance):
    """DuckDB hands TIMESTAMPTZ back in the process's zone, so the cursor's stamps may carry different
    offsets (a DST change): the window is a day before the newest instant, not the greatest string, or a
    letter reported a day ago and pruned from the cursor is reported again."""
    newest = datetime(2026, 10, 25, 1, 10, tzinfo=timezone.utc)
    old = newest - timedelta(days=1, minutes=20)
    dead_letters.add(store, dl_id="old", kind=DeadLetterKind.ACTION, error="boom", now=old, day=old.date())
    summer, winter = timezone(timedelta(hours=2)), timezone(timedelta(hours=1))
    cursor = json.dumps({"a": datetime(2026, 10, 25, 0, 30, tzinfo=timezone.utc).astimezone(summer).isoformat(),
                         "b": newest.astimezone(winter).isoformat()})   # "02:30+02:00" sorts after "02:10+01:00"
    assert tick(build_dead_letter_sensor(), settings, instance, cursor).skip_message == "no new dead letters"
