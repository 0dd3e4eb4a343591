"""Many concurrent reservations (threads, then processes) race for the last dollar of a category.
Each granted call settles to at most what it reserved, or fails and releases. The category's
recorded spend must never pass its limit, and no reservation may be left held."""
from __future__ import annotations

import multiprocessing
import random
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date, datetime, timezone
from pathlib import Path

from support import ledger_row

from cass_pipelines.domain.budget_rules import Refusal
from cass_pipelines.domain.settings import Settings
from cass_pipelines.store.budget import release, reserve, settle
from cass_pipelines.store.db import Store
from cass_pipelines.store.ledger import insert_rows
from cass_pipelines.store.schema import migrate

DAY = date(2026, 11, 26)
NOW = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)
CATEGORY = "research"                    # 25% of $8 = $2.00
SETTINGS = {"daily_budget_usd": 8.0, "reserve_usd": 0.5}
ALREADY_SPENT = 1.0                      # leaves the last dollar of the category


def worker(db: str, home: str, name: str, attempts: int, seed: int) -> dict:
    """Reserve, 'call', then settle at 50-100% of the hold (or release on a simulated error)."""
    store, settings = Store(db), Settings(home=Path(home), **SETTINGS)
    rng = random.Random(seed)
    granted = refused = 0
    for i in range(attempts):
        held = reserve(store, day=DAY, category=CATEGORY, amount_usd=rng.uniform(0.04, 0.12), settings=settings,
                       priority="normal", action_id="research.search", run_id=name, phase="morning", now=NOW)
        if isinstance(held, Refusal):
            refused += 1
            continue
        granted += 1
        time.sleep(rng.uniform(0, 0.003))      # the call; no connection is held meanwhile
        if rng.random() < 0.1:
            release(store, held.id, NOW)
        else:
            settle(store, held.id, ledger_row(f"{name}-{i}", round(held.amount_usd * rng.uniform(0.5, 1.0), 9)), NOW)
    return {"granted": granted, "refused": refused}


def _process_entry(args: tuple) -> dict:
    return worker(*args)


def setup_store(tmp_path: Path) -> tuple[Store, Settings]:
    settings = Settings(home=tmp_path, **SETTINGS)
    store = Store(settings.db_path)
    migrate(store)
    with store.transaction() as conn:
        insert_rows(conn, [ledger_row("earlier", ALREADY_SPENT)])
    return store, settings


def assert_held_the_line(store: Store, settings: Settings, results: list[dict]) -> dict:
    limit = settings.category_limit(CATEGORY)
    spent = store.scalar("SELECT sum(cost_usd) FROM llm_ledger WHERE category = ?", [CATEGORY])
    held = store.scalar("SELECT count(*) FROM reservations WHERE status = 'held'")
    reconciled = store.scalar("SELECT coalesce(sum(actual_usd), 0) FROM reservations WHERE status = 'reconciled'")
    ledger_reserved = store.scalar("SELECT coalesce(sum(cost_usd), 0) FROM llm_ledger WHERE reservation_id IS NOT NULL")
    granted = sum(r["granted"] for r in results)
    refused = sum(r["refused"] for r in results)
    assert spent <= limit + 1e-9, f"spent {spent} over the category limit {limit}"
    assert held == 0, "a reservation leaked"
    assert abs(reconciled - ledger_reserved) < 1e-9
    assert granted == store.scalar("SELECT count(*) FROM reservations WHERE status <> 'refused'")
    assert refused == store.scalar("SELECT count(*) FROM reservations WHERE status = 'refused'")
    assert refused > 0 and granted > 10, "the race did not contend for the last dollar"
    assert spent > limit - 0.2, "refusals should only start near the limit"
    return {"spent": spent, "limit": limit, "granted": granted, "refused": refused}


def test_threads_race_for_the_last_dollar(tmp_path):
    store, settings = setup_store(tmp_path)
    results: list[dict] = []
    threads = [threading.Thread(target=lambda n=n: results.append(
        worker(str(settings.db_path), str(tmp_path), f"t{n}", 6, n))) for n in range(8)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    numbers = assert_held_the_line(store, settings, results)
    print(f"threads: {numbers} in {time.perf_counter() - started:.2f}s")


def test_processes_race_for_the_last_dollar(tmp_path):
    store, settings = setup_store(tmp_path)
    started = time.perf_counter()
    # Every store open of a worker is bounded (db.OPEN_DEADLINE_S); a multiprocessing.Pool is not: a worker that
    # dies mid-task (a native crash, a kill under load) leaves Pool.map waiting forever (pytest-timeout's 300 s,
    # no cause). The executor fails at once with BrokenProcessPool instead. Spawned: no inherited DuckDB state.
    with ProcessPoolExecutor(5, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_process_entry, [(str(settings.db_path), str(tmp_path), f"p{n}", 8, 100 + n)
                                                 for n in range(5)]))
    numbers = assert_held_the_line(store, settings, results)
    print(f"processes: {numbers} in {time.perf_counter() - started:.2f}s")
