"""Recovery after a crash: run at the start of every Dagster run, by budget_sensor, and by the CLI's
reads when something is stale, so a killed run leaves no stuck state and loses nothing paid.

In this order:
1. answers that were paid for but not yet in the ledger (the write-ahead log of a process that died
   between receiving and settling) are settled to their recorded usage;
2. holds whose owner is dead are released (after 1, so a paid hold is never released as $0);
3. actions claimed by a dead owner are marked interrupted, their units go back to `planned` (the
   next run of the unit starts the action again), and dead plan claims are released.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from cass_pipelines.store import budget, claims, paid_log, plans
from cass_pipelines.store.budget import release_stale, settle, unsettled
from cass_pipelines.store.claims import owner_dead, process_alive
from cass_pipelines.store.db import Store


@dataclass
class Recovery:
    settled: list[str] = field(default_factory=list)        # request ids replayed into the ledger
    released: list[str] = field(default_factory=list)       # reservation ids given back
    interrupted: list[str] = field(default_factory=list)    # "unit:position" of actions whose run died
    claims_released: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.settled or self.released or self.interrupted or self.claims_released)

    def summary(self) -> str:
        parts = [(self.settled, "settled {} paid answer(s) from the write-ahead log"),
                 (self.released, "released {} reservation(s) of finished runs or dead processes"),
                 (self.interrupted, "reset {} interrupted action(s)"),
                 (self.claims_released, "released {} dead claim(s)")]
        return "recovered: " + ", ".join(text.format(len(items)) for items, text in parts if items)


def replay_paid(store: Store, home: Path, now: datetime) -> list[str]:
    """Settle every logged paid answer the ledger lacks; delete logs of dead processes once replayed."""
    settled: list[str] = []
    for path, _, _ in paid_log.files(home):
        rows = list(paid_log.read(path))
        missing = unsettled(store, [r.request_id for r in rows])
        for row in rows:
            if row.request_id in missing and row.reservation_id:
                settle(store, row.reservation_id, row, now)
                settled.append(row.request_id)
    for path in paid_log.dead_files(home, process_alive):
        path.unlink(missing_ok=True)
    return settled


def recover(store: Store, home: Path, is_run_over: Callable[[str], bool], now: datetime) -> Recovery:
    out = Recovery(settled=replay_paid(store, home, now))
    out.released = release_stale(store, is_run_over, now)
    for key, owner in claims.held(store):
        if not owner_dead(owner, is_run_over):
            continue
        kind, _, rest = key.partition(":")
        if kind == "action":
            uid, _, position = rest.rpartition(":")
            note = (f"interrupted: run {(owner.run_id or '')[:8] or '?'} (pid {owner.pid}) ended mid-action; "
                    "the next run of this unit starts the action again")
            if plans.interrupt_action(store, uid, int(position), note, now):
                out.interrupted.append(f"{uid}:{position}")
                continue
        else:
            with store.transaction() as conn:
                claims.end(conn, key, claims.ClaimState.RELEASED, now)
        out.claims_released.append(key)
    return out


def recover_if_stale(rt, is_run_over: Callable[[str], bool], now: datetime) -> Recovery | None:
    """For readers (status, budget): recover only when a dead owner left something, so an ordinary
    read writes nothing."""
    return recover(rt.store, rt.settings.home, is_run_over, now) if stale(rt.store, rt.settings.home,
                                                                            is_run_over) else None


def stale(store: Store, home: Path, is_run_over: Callable[[str], bool]) -> bool:
    """Whether recover() has anything to do (a read-only check: reads call recover() only then)."""
    if any(not process_alive(pid) for _, host, pid in paid_log.files(home) if host == claims.HOST):
        return True
    holders = [owner for _, owner in claims.held(store)]
    holders += [owner for _, owner in budget.held_owners(store)]
    return any(owner_dead(o, is_run_over) for o in holders)
