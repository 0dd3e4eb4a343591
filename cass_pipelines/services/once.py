"""Work that must happen once across runs and processes (a plan call, the week's plan): claim it, or wait
for the run that holds it and use what it made."""
from __future__ import annotations

import time
from datetime import datetime
from typing import Callable, TypeVar

from cass_pipelines.domain.states import ClaimOutcome, ClaimState
from cass_pipelines.store import claims
from cass_pipelines.store.claims import Owner
from cass_pipelines.store.db import Store

WAIT_POLL_S = 0.5   # how often a run waiting for another run's work looks again
T = TypeVar("T")


def claim_or_wait(store: Store, key: str, owner: Owner, is_run_over: Callable[[str], bool], now: datetime,
                  done: Callable[[], bool], wait_s: float, doing: str) -> bool:
    """True when this run does the work of `key`. While another live run holds the claim, wait for its work
    (False once `done()` or its claim ended done); take over if that run dies. `doing` names the work in
    the error of a wait past `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        taken = claims.claim(store, key, owner, is_run_over, now)
        if taken.ours:
            return True
        if taken.outcome is ClaimOutcome.DONE or done():
            return False
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {taken.holder.run_id if taken.holder else '?'} has been {doing} "
                               f"for over {wait_s:.0f}s; try again later")
        with store.released():   # (a caller's session is let go while it waits)
            time.sleep(WAIT_POLL_S)


def made_once(store: Store, key: str, owner: Owner, is_run_over: Callable[[str], bool], now: datetime,
              stored: Callable[[], T | None], make: Callable[[], T], wait_s: float, doing: str) -> T:
    """What `stored()` finds, else `make()` by the one run that claims `key`: a run beside it waits for its
    work and returns it (paid once); a failed `make` lets the claim go, so another run may try."""
    if (found := stored()) is not None:
        return found
    ours = claim_or_wait(store, key, owner, is_run_over, now, lambda: stored() is not None, wait_s, doing)
    if not ours and (found := stored()) is not None:
        return found
    try:
        made = make()
    except BaseException:
        claims.end_many(store, [key], ClaimState.RELEASED, now)
        raise
    claims.end_many(store, [key], ClaimState.DONE, now)
    return made
