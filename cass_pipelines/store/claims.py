"""Claims: who may do a piece of work that must happen once (an action of a unit, a plan call).

A claim names its owner (Dagster run id, process id, host). Taking one is one transaction: a free or
finished-by-a-dead-owner key is taken, a key held by a live owner is not, a key whose work is done
is reported done. The caller says what "dead" means (its Dagster run is over, its process is gone),
so this module stays free of Dagster.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Collection, Sequence

import duckdb

from cass_pipelines.domain.states import ClaimOutcome, ClaimState
from cass_pipelines.store.db import Store

HOST = socket.gethostname()


@dataclass(frozen=True)
class Owner:
    run_id: str | None
    pid: int
    host: str

    @classmethod
    def here(cls, run_id: str | None) -> "Owner":
        return cls(run_id, os.getpid(), HOST)


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    holder: Owner | None = None    # the previous owner (taken over) or the live one (held elsewhere)

    @property
    def ours(self) -> bool:
        return self.outcome in (ClaimOutcome.ACQUIRED, ClaimOutcome.TAKEN_OVER)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        return True
    return True


def process_stamp(pid: int) -> str | None:
    """Who `pid` is: the boot and the process's start time (Linux /proc), so that a pid the system gave to
    another process since (after a reboot, or once pids wrapped) is not taken for it; None where unknown."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}"   # field 22, starttime (the name may hold spaces)


def process_is(pid: int, stamp: str | None) -> bool:
    """Whether `pid` is still the process `stamp` (process_stamp) was taken of; by its pid alone without one."""
    return process_alive(pid) and (stamp is None or process_stamp(pid) in (stamp, None))


def never_over(run_id: str) -> bool:
    """Without a Dagster instance to ask, a run counts as live while its process is."""
    return False


def owner_dead(owner: Owner, is_run_over: Callable[[str], bool]) -> bool:
    """An owner is dead when its Dagster run is over or its process (on this host) is gone."""
    if owner.run_id and is_run_over(owner.run_id):
        return True
    return owner.host == HOST and not process_alive(owner.pid)


def _judged(row: tuple | None, me: Owner, is_run_over: Callable[[str], bool]) -> Claim:
    """What taking a key whose claims row is `row` (run_id, pid, host, state; None: no row) gives."""
    if row is None:
        return Claim(ClaimOutcome.ACQUIRED)
    holder, state = Owner(row[0], row[1], row[2]), ClaimState(row[3])
    if state is ClaimState.DONE:
        return Claim(ClaimOutcome.DONE, holder)
    if state is ClaimState.HELD and holder != me and not owner_dead(holder, is_run_over):
        return Claim(ClaimOutcome.HELD_ELSEWHERE, holder)
    return Claim(ClaimOutcome.TAKEN_OVER if state is ClaimState.HELD and holder != me else ClaimOutcome.ACQUIRED,
                 holder)


def _hold(conn: duckdb.DuckDBPyConnection, keys: list[str], me: Owner, now: datetime, existing: Collection[str]) -> None:
    """Hold `keys` for `me`: the ones that have a row (`existing`, read in the same transaction) are updated,
    the others inserted (an upsert costs DuckDB 3-4 times an insert or an update)."""
    if old := [k for k in keys if k in existing]:
        conn.execute(f"""UPDATE claims SET run_id = ?, pid = ?, host = ?, state = '{ClaimState.HELD}', claimed_at = ?,
            ended_at = NULL WHERE key IN (SELECT unnest(?::TEXT[]))""", [me.run_id, me.pid, me.host, now, old])
    if new := [k for k in keys if k not in existing]:
        conn.execute(f"""INSERT INTO claims (key, run_id, pid, host, state, claimed_at, ended_at)
            SELECT unnest(?::TEXT[]), ?, ?, ?, '{ClaimState.HELD}', ?, NULL""", [new, me.run_id, me.pid, me.host, now])


def take(conn: duckdb.DuckDBPyConnection, key: str, me: Owner, is_run_over: Callable[[str], bool],
         now: datetime) -> Claim:
    """Take `key` inside the caller's transaction (so the caller's own writes commit with it)."""
    row = conn.execute("SELECT run_id, pid, host, state FROM claims WHERE key = ?", [key]).fetchone()
    claim = _judged(row, me, is_run_over)
    if claim.ours:
        _hold(conn, [key], me, now, existing=[key] if row else [])
    return claim


def claim(store: Store, key: str, me: Owner, is_run_over: Callable[[str], bool], now: datetime) -> Claim:
    with store.transaction() as conn:
        return take(conn, key, me, is_run_over, now)


def claim_many(store: Store, keys: Sequence[str], me: Owner, is_run_over: Callable[[str], bool],
               now: datetime) -> set[str]:
    """Take each of `keys` as `claim` does, all in one transaction (two statements); returns the keys
    now ours."""
    if not keys:
        return set()
    with store.transaction() as conn:
        rows = {r[0]: r[1:] for r in conn.execute(
            "SELECT key, run_id, pid, host, state FROM claims WHERE key IN (SELECT unnest(?::TEXT[]))",
            [list(keys)]).fetchall()}
        ours = [key for key in dict.fromkeys(keys) if _judged(rows.get(key), me, is_run_over).ours]
        if ours:
            _hold(conn, ours, me, now, existing=rows)
    return set(ours)


def end_many(store: Store, keys: Sequence[str], state: ClaimState, now: datetime) -> None:
    """`end` for each of `keys`, in one transaction."""
    if not keys:
        return
    with store.transaction() as conn:
        conn.execute("UPDATE claims SET state = ?, ended_at = ? WHERE key IN (SELECT unnest(?::TEXT[]))",
                     [state.value, now, list(keys)])


def end(conn: duckdb.DuckDBPyConnection, key: str, state: ClaimState, now: datetime) -> None:
    """Mark the claim done or released, inside the caller's transaction."""
    conn.execute("UPDATE claims SET state = ?, ended_at = ? WHERE key = ?", [state.value, now, key])


def held(store: Store, prefix: str = "") -> list[tuple[str, Owner]]:
    rows = store.all(f"SELECT key, run_id, pid, host FROM claims WHERE state = '{ClaimState.HELD}' "
                     "AND starts_with(key, ?)",
                     [prefix])
    return [(r["key"], Owner(r["run_id"], r["pid"], r["host"])) for r in rows]


def action_key(unit_id: str, position: int) -> str:
    return f"action:{unit_id}:{position}"


def summary_key(unit_id: str, status: str) -> str:
    return f"summary:{unit_id}:{status}"


def week_key(week) -> str:
    return f"week:{week}"


def week_journal_key(week) -> str:
    return f"week_journal:{week}"


def plan_key(day, revision: int) -> str:
    return f"plan:{day}:{revision}"
