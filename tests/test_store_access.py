"""Cheap store access keeps DuckDB's multi-process safety; the phase runs one step per action and
no other step per action; reads answer without Dagster."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from cass_pipelines.definitions import build_defs
from cass_pipelines.defs.partitions import phase_key
from cass_pipelines.execution import instance_for, run_memory, run_phase
from cass_pipelines.services.runtime import open_runtime
from cass_pipelines.store import budget as sb
from cass_pipelines.store import views
from cass_pipelines.store.dagster_runs import recent_runs
from cass_pipelines.store.db import Store, open_connection

DAY = date(2026, 11, 20)
OPEN = "import duckdb, sys; duckdb.connect(sys.argv[1]).close(); print('opened')"


def other_process_opens(path) -> bool:
    proc = subprocess.run([sys.executable, "-c", OPEN, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 or "lock" in proc.stderr.lower(), proc.stderr
    return proc.returncode == 0


def test_the_file_is_locked_exactly_while_a_session_is_open(tmp_path):
    store = Store(tmp_path / "cass.duckdb")
    store.execute("CREATE TABLE t (x INTEGER)")
    with store.session():
        store.execute("INSERT INTO t (x) VALUES (1)")
        assert not other_process_opens(store.path)
    assert other_process_opens(store.path)
    assert store.scalar("SELECT count(*) FROM t") == 1


def test_a_session_lets_the_file_go_for_a_released_block_and_takes_it_up_again(tmp_path):
    """What metering does around a model call made inside a session: the file is free during the call
    (another process opens it), the session goes on after it, and a transaction cannot be let go."""
    store = Store(tmp_path / "cass.duckdb")
    store.execute("CREATE TABLE t (x INTEGER)")
    with store.session():
        store.execute("INSERT INTO t (x) VALUES (1)")
        with store.released():
            assert other_process_opens(store.path)
            store.execute("INSERT INTO t (x) VALUES (2)")   # a write meanwhile opens on its own
        store.execute("INSERT INTO t (x) VALUES (3)")
        assert not other_process_opens(store.path)
        with pytest.raises(RuntimeError, match="inside a transaction"), store.transaction(), store.released():
            pass
        with pytest.raises(ValueError), store.released():   # the session is taken up again after an error
            raise ValueError("the call failed")
        store.scalar("SELECT 1")
        assert not other_process_opens(store.path)
    assert other_process_opens(store.path)
    with store.released():   # outside a session: nothing to let go
        pass
    with pytest.raises(RuntimeError, match="inside a transaction"), store.transaction(), store.released():
        pass   # (a transaction outside a session cannot be let go either)
    assert store.scalar("SELECT list(x ORDER BY x) FROM t") == [1, 2, 3]


HOLDER = """
import sys
from cass_pipelines.store.db import Store
store = Store(sys.argv[1])
with store.session():
    store.execute("INSERT INTO t (who) VALUES ('holder')")
    print("holding", flush=True)
    sys.stdin.readline()
with store.session():   # wants the file again right after letting it go
    store.execute("INSERT INTO t (who) VALUES ('holder again')")
"""


def test_a_process_that_lets_the_file_go_and_wants_it_again_waits_behind_one_already_waiting(tmp_path):
    """Processes take turns at the file: one doing bookkeeping back to back no longer starves another
    whose backoff missed each short gap (4 processes doing reserve + settle: one open waited 16 s,
    bench/bench_reservations.py)."""
    store = Store(tmp_path / "cass.duckdb")
    store.execute("CREATE SEQUENCE seq")
    store.execute("CREATE TABLE t (who TEXT, n INTEGER DEFAULT nextval('seq'))")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    waiter = threading.Thread(target=lambda: store.execute("INSERT INTO t (who) VALUES ('waiter')"))
    waiter.start()
    time.sleep(0.5)   # the waiter is waiting for the file
    holder.stdin.write("\n")
    holder.stdin.flush()
    waiter.join(timeout=60)
    assert holder.wait(timeout=60) == 0
    assert [r["who"] for r in store.all("SELECT who FROM t ORDER BY n")] == ["holder", "waiter", "holder again"]


FORKS_THEN_DIES = """
import os, sys, time
from cass_pipelines.store.db import Store
store = Store(sys.argv[1])
with store.session():
    store.execute("INSERT INTO t (who) VALUES ('parent')")
    child = os.fork()
    if child == 0:       # a child forked while the parent has the file lives on
        time.sleep(60)
        os._exit(0)
    open(sys.argv[2], "w").write(str(child))
    os._exit(0)          # the parent dies holding the file
"""


def test_a_child_forked_while_the_file_was_held_does_not_keep_it_after_its_parent_died(tmp_path):
    store = Store(tmp_path / "cass.duckdb")
    store.execute("CREATE SEQUENCE seq")
    store.execute("CREATE TABLE t (who TEXT, n INTEGER DEFAULT nextval('seq'))")
    child = tmp_path / "child.pid"
    subprocess.run([sys.executable, "-c", FORKS_THEN_DIES, str(store.path), str(child)], timeout=60, check=True)
    try:
        with open_connection(store.path, deadline_s=10) as conn:
            assert conn.execute("SELECT who FROM t").fetchall() == [("parent",)]
    finally:
        os.kill(int(child.read_text()), signal.SIGKILL)


def test_threads_share_the_file_and_release_it_when_the_last_one_is_done(tmp_path):
    store = Store(tmp_path / "cass.duckdb")
    store.execute("CREATE TABLE t (x INTEGER)")
    inside, release = threading.Barrier(3), threading.Event()

    def work(x: int) -> None:
        with store.session():
            store.execute("INSERT INTO t (x) VALUES (?)", [x])
            inside.wait(timeout=30)
            release.wait(timeout=30)

    threads = [threading.Thread(target=work, args=(x,)) for x in (1, 2)]
    for t in threads:
        t.start()
    inside.wait(timeout=30)
    assert not other_process_opens(store.path)   # both sessions hold the one attachment
    release.set()
    for t in threads:
        t.join(timeout=30)
    assert other_process_opens(store.path)
    assert store.scalar("SELECT sum(x) FROM t") == 3


def test_a_write_waits_for_another_threads_transaction_on_the_same_row(tmp_path):
    """Units run side by side on threads: one appending to a note while another links it (a transaction)
    must not be refused by DuckDB as a write-write conflict."""
    store = Store(tmp_path / "cass.duckdb")
    store.execute("CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT)")
    store.execute("INSERT INTO notes VALUES ('n1', 'a')")
    inside, writing, errors = threading.Event(), threading.Event(), []

    def append() -> None:
        inside.wait(10)
        writing.set()
        try:
            store.execute("UPDATE notes SET body = body || '+append' WHERE id = 'n1'")
        except Exception as exc:   # noqa: BLE001 - the failure under test
            errors.append(exc)

    writer = threading.Thread(target=append)
    writer.start()
    with store.transaction() as conn:
        conn.execute("UPDATE notes SET body = body || '+link' WHERE id = 'n1'")
        inside.set()
        assert writing.wait(10)
        writer.join(0.3)   # the append is waiting, not refused
        assert writer.is_alive() and not errors
    writer.join(10)
    assert not errors and store.scalar("SELECT body FROM notes WHERE id = 'n1'") == "a+link+append"


def test_a_group_that_cannot_open_the_file_fails_each_work_once_without_opening_again(tmp_path):
    opens: list[int] = []

    @contextmanager
    def locked_out():   # another process holds the file past the deadline
        opens.append(1)
        while len(opens) == 1 and len(store._group.queue) < 3:   # the first group fails once 3 works queue
            time.sleep(0.001)
        raise duckdb.IOException("Could not set lock on file: Conflicting lock is held")
        yield

    store = Store(tmp_path / "cass.duckdb", connect_fn=locked_out)
    errors: list[str] = []

    def hand_in() -> None:
        try:
            store.grouped(lambda conn: conn.execute("SELECT 1"))
        except duckdb.IOException as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=hand_in) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(errors) == 4 and all("Conflicting lock" in e for e in errors)
    assert len(opens) == 2   # one per group: no work of the second is run again alone


def test_two_files_in_one_process_stay_apart(tmp_path):
    a, b = Store(tmp_path / "a.duckdb"), Store(tmp_path / "b.duckdb")
    with a.session(), b.session():
        a.execute("CREATE TABLE t (x INTEGER)")
        b.execute("CREATE TABLE t (x VARCHAR)")
        a.execute("INSERT INTO t (x) VALUES (1)")
    assert a.scalar("SELECT count(*) FROM t") == 1 and b.scalar("SELECT count(*) FROM t") == 0


def test_works_handed_in_together_commit_together_and_one_that_fails_fails_alone(tmp_path):
    store = Store(tmp_path / "cass.duckdb")
    store.execute("CREATE TABLE t (n INTEGER)")
    runs: dict[int, int] = {}
    results: dict[int, object] = {}

    def work(n: int):
        def run(conn):
            runs[n] = runs.get(n, 0) + 1
            if n == 0:   # the first one commits alone; the others queue up behind it meanwhile
                while len(store._group.queue) < 3:
                    time.sleep(0.005)
            store.execute("INSERT INTO t (n) VALUES (?)", [n])   # (a store call: inside the work's transaction)
            if n == 2:
                raise ValueError("work 2 is bad")
            return conn.execute("SELECT list(n ORDER BY n) FROM t").fetchone()[0]
        return run

    def hand_in(n: int) -> None:
        try:
            results[n] = store.grouped(work(n))
        except ValueError as exc:
            results[n] = exc

    first = threading.Thread(target=hand_in, args=(0,))
    first.start()
    while not store._group.leading:
        time.sleep(0.001)
    others = [threading.Thread(target=hand_in, args=(n,)) for n in (1, 2, 3)]
    for queued, t in enumerate(others, 1):
        t.start()
        while len(store._group.queue) < queued:   # handed in one after another: 1, 2, 3
            time.sleep(0.001)
    for t in [first, *others]:
        t.join(timeout=30)
    # 1-3 went in together, in the order handed in; 2 failed the group (3 never ran in it), so each
    # ran again alone.
    assert runs == {0: 1, 1: 2, 2: 2, 3: 1}
    assert results[0] == [0] and results[1] == [0, 1] and results[3] == [0, 1, 3]
    assert str(results[2]) == "work 2 is bad"
    assert store.scalar("SELECT list(n ORDER BY n) FROM t") == [0, 1, 3]
    assert other_process_opens(store.path)   # nothing left open
    with store.transaction(), pytest.raises(RuntimeError, match="inside a transaction"):
        store.grouped(work(4))   # it would wait for the write lock its own thread holds


def test_calibration_reads_only_the_ledgers_recent_days(runtime):
    store = runtime.store
    for n, (day, cost) in enumerate([(DAY - timedelta(days=90), 5.0), (DAY, 0.01), (DAY, 0.03)]):
        store.execute("INSERT INTO llm_ledger (request_id, ts, date, category, model, input_tokens, output_tokens, "
                      "cache_creation_input_tokens, cache_read_input_tokens, cost_usd, offline, attempts, latency_ms, "
                      "work_unit_id, action_id, run_id) VALUES (?, ?, ?, 'research', 'm', 0, 0, 0, 0, ?, TRUE, 1, 1, "
                      "?, 'research.search', 'r')",
                      [f"req_{n}", datetime(day.year, day.month, day.day, 9, tzinfo=timezone.utc), day, cost, f"wu{n}"])
    stats = sb.ledger_action_averages(store)["research.search"]
    assert stats.executions == 2 and stats.mean_usd == pytest.approx(0.02)   # the 90-day-old $5 is out


def test_artifact_counts_count_every_table_in_one_statement(runtime):
    counts = views.artifact_counts(runtime.store)
    assert counts == {t: runtime.store.scalar(f"SELECT count(*) FROM {t}") for t in views.COUNTED_TABLES}


@pytest.fixture
def day_env(sample_home):
    rt = open_runtime()
    return rt, instance_for(rt.settings), build_defs(rt.settings, rt.registry)


def test_a_phase_has_one_step_per_action_and_a_partitioned_check_that_runs_alone(day_env):
    rt, instance, defs = day_env
    result = run_phase(defs, instance, DAY, "morning")
    assert result.success
    steps = [e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"]
    actions = [s for s in steps if ".action_" in s]
    executed = rt.store.scalar("SELECT count(*) FROM action_runs WHERE run_id = ?", [result.run_id])
    assert len(actions) == executed > 0
    # Besides the actions: the plan, start and finish of the work, summaries, the check on the work and the
    # costs, whose step evaluates the four checks on cost_records too.
    assert sorted(s for s in steps if s not in actions) == sorted([
        "phase_plan", "phase_work_graph.start_phase_work", "phase_work_graph.finish_phase_work", "work_summaries",
        "cost_records", "phase_work_actions_succeeded"])
    check = dg.AssetCheckKey(dg.AssetKey("phase_work"), "actions_succeeded")
    alone = defs.resolve_job_def("phase_job").get_subset(asset_selection=set(), asset_check_selection={check})
    again = alone.execute_in_process(instance=instance, partition_key=phase_key(DAY.isoformat(), "morning"),
                                     resources=dict(defs.resources), raise_on_error=False)
    assert again.success
    evaluations = again.get_asset_check_evaluations()
    assert [(e.check_name, e.passed) for e in evaluations] == [("actions_succeeded", True)]
    # One of the four cost checks alone: the shared step evaluates only what was selected.
    budget = dg.AssetCheckKey(dg.AssetKey("cost_records"), "budget_not_exhausted")
    alone = defs.resolve_job_def("phase_job").get_subset(asset_selection=set(), asset_check_selection={budget})
    again = alone.execute_in_process(instance=instance, partition_key=phase_key(DAY.isoformat(), "morning"),
                                     resources=dict(defs.resources), raise_on_error=False)
    assert again.success
    assert [(e.check_name, e.passed) for e in again.get_asset_check_evaluations()] == [("budget_not_exhausted", True)]


def opens_by_step(monkeypatch) -> dict[str, int]:
    """Store opens (store.db.connect) from now on, by the step (its key without the mapping) that made them."""
    from cass_pipelines.defs import threaded_executor
    from cass_pipelines.store import db

    where, opens = threading.local(), {}
    run_step, connect = threaded_executor._run_step, db.connect

    def step(key, *args):
        where.step = key.split("[")[0]
        return run_step(key, *args)

    def counting(*args, **kwargs):
        key = getattr(where, "step", "outside a step")
        opens[key] = opens.get(key, 0) + 1
        return connect(*args, **kwargs)
    monkeypatch.setattr(threaded_executor, "_run_step", step)
    monkeypatch.setattr(db, "connect", counting)
    return opens


def test_a_phase_runs_its_bookkeeping_in_few_opens(day_env, monkeypatch):
    """The plan step opens the store once for the run's schema check and recovery pass, and once to plan
    and open the phase (the first phase of the day: also once before and once after each model call of
    its plan); cost_records and its checks read the store in one step and one open."""
    rt, instance, defs = day_env
    opens = opens_by_step(monkeypatch)
    assert run_phase(defs, instance, DAY, "morning").success
    morning = dict(opens)
    opens.clear()
    assert run_phase(defs, instance, DAY, "afternoon").success
    assert opens["phase_plan"] == 2, opens
    assert morning["phase_plan"] <= 4, morning
    assert opens["cost_records"] == 1 and "cost_records_checks" not in opens, opens


def test_status_reads_recent_runs_without_dagster_as_dagster_does(day_env, tmp_path):
    rt, instance, defs = day_env
    run_memory(defs, instance)
    run_phase(defs, instance, DAY, "morning")
    light = recent_runs(Path(instance.root_directory))
    heavy = [{"run_id": r.run_id, "job": r.job_name, "status": r.status.value,
              "partition": r.tags.get("dagster/partition", ""), "trigger": r.tags.get("cass/trigger", "")}
             for r in instance.get_runs(limit=8)]
    assert light == heavy and len(light) == 2
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "dagster.yaml").write_text("storage:\n  postgres:\n    postgres_url: postgresql://x\n")
    assert recent_runs(other) is None   # another storage: only Dagster can say
    assert recent_runs(tmp_path / "empty") == []


@pytest.mark.parametrize("command", ["status", "budget"])
def test_read_commands_import_no_dagster_sdk_or_run_time_modules(sample_home, command):
    """What only runs need (Dagster, the SDK, the preflight, the importer, the week report) stays unloaded."""
    heavy = ("dagster", "sqlalchemy", "anthropic", "cass_pipelines.services.preflight",
             "cass_pipelines.services.importer", "cass_pipelines.services.week_report")
    code = (f"import json, sys; from cass_pipelines.cli.main import main; main([{command!r}, '--json']); "
            f"sys.stderr.write(json.dumps([m for m in {heavy!r} if m in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "[]"


def test_items_handed_to_one_many_together_go_in_one_call_and_a_bad_one_fails_alone(tmp_path):
    store = Store(tmp_path / "cass.duckdb")
    store.execute("CREATE TABLE t (n INTEGER)")
    calls: list[list[int]] = []

    def insert(conn, items: list[int]) -> list[int]:
        calls.append(list(items))
        if items[0] == 0:   # the first one commits alone; the others queue up behind it meanwhile
            while len(store._group.queue) < 3:
                time.sleep(0.005)
        if 2 in items:
            raise ValueError("item 2 is bad")
        conn.execute("INSERT INTO t SELECT unnest(?::INTEGER[])", [items])
        return [n * 10 for n in items]

    results: dict[int, object] = {}

    def hand_in(n: int) -> None:
        try:
            results[n] = store.grouped_many(insert, n)
        except Exception as exc:
            results[n] = exc

    first = threading.Thread(target=hand_in, args=(0,))
    first.start()
    while not store._group.leading and first.is_alive():
        time.sleep(0.001)
    others = [threading.Thread(target=hand_in, args=(n,)) for n in (1, 2, 3)]
    for queued, t in enumerate(others, 1):
        t.start()
        while len(store._group.queue) < queued and first.is_alive():
            time.sleep(0.001)
    for t in [first, *others]:
        t.join(timeout=30)
    # 1-3 went in one call, in the order handed in; 2 failed it, so each ran again alone.
    assert calls == [[0], [1, 2, 3], [1], [2], [3]]
    assert results[0] == 0 and results[1] == 10 and results[3] == 30 and str(results[2]) == "item 2 is bad"
    assert store.scalar("SELECT list(n ORDER BY n) FROM t") == [0, 1, 3]
