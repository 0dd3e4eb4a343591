"""A termination of the run this process is executing, for the waits that would outlast it.

Dagster delivers a termination as a signal to the main thread, and no step runs there
(defs/threaded_executor.py runs them on threads, where no signal can interrupt them): the executor
`request`s a stop, and a step waiting for a batch's answer stops waiting (the batch stays recorded and
is collected when it ends, as after any wait that ran out). A call already sent is let finish.
"""
import threading

_STOP = threading.Event()


def request() -> None:
    _STOP.set()


def clear() -> None:
    _STOP.clear()


def requested() -> bool:
    return _STOP.is_set()


def pause(seconds: float) -> bool:
    """Sleep `seconds`, less if a stop is requested meanwhile; whether one was."""
    return _STOP.wait(max(seconds, 0.0))
