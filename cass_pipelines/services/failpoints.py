"""Failpoints: named places where the reliability tests kill the process on purpose, to prove that
a crash there loses nothing. `CASS_FAILPOINT=name` (or `name:N`, the N-th time the point is reached)
sends SIGKILL to the process itself; unset, a failpoint is a dictionary lookup and nothing else."""
from __future__ import annotations

import os
import signal
import threading

ENV = "CASS_FAILPOINT"
_hits: dict[str, int] = {}
_lock = threading.Lock()


def failpoint(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
