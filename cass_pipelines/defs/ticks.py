"""What schedules and sensors share: they run in the daemon next to runs that may hold the DuckDB file,
so each gives up after a few seconds and says so in its tick instead of blocking."""
from __future__ import annotations

import dagster as dg
import duckdb

SENSOR_DB_DEADLINE_S = 3.0


def db_busy(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.Error) and "lock" in str(exc).lower()


BUSY = dg.SkipReason("the database is busy with a run (file lock held); will look again next tick")


def unless_busy(read):
    """`read()`, or BUSY when a run holds the DuckDB file past the sensors' short deadline."""
    try:
        return read()
    except Exception as exc:
        if db_busy(exc):
            return BUSY
        raise


# A run that may still do the work (NOT_STARTED is left out: nothing starts a run left there, and Dagster
# submits it again when its run key is asked for again).
NOT_OVER = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
            dg.DagsterRunStatus.CANCELING]


def runs_ahead(instance: dg.DagsterInstance, tag: str, value: str) -> bool:
    """Whether a run tagged `tag=value` is queued, starting or running (a daemon retry or a re-execution of
    a failed one copies its tags)."""
    return instance.get_runs_count(dg.RunsFilter(tags={tag: value}, statuses=NOT_OVER)) > 0


def failed_runs(instance: dg.DagsterInstance, tag: str, value: str) -> int:
    """How many runs tagged `tag=value` failed. Dagster never launches a run key twice, whatever its run
    became: a sensor asks again for work whose run failed under a new key, up to a limit of these."""
    return instance.get_runs_count(dg.RunsFilter(tags={tag: value}, statuses=[dg.DagsterRunStatus.FAILURE]))
