"""The states of work units and actions, as stored in DuckDB (one source: no status literal elsewhere)."""
from enum import StrEnum


class UnitStatus(StrEnum):
    PLANNED = "planned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DEFERRED = "deferred"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class ActionStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DEFERRED = "deferred"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"   # its run died mid-action; the next run of the unit starts it again
