"""Partitions: `date` (daily, in the agent's timezone, today included) x `phase`."""
from __future__ import annotations

import dagster as dg

from cass_pipelines.domain.categories import PHASES
from cass_pipelines.domain.clock import clock_from_env
from cass_pipelines.domain.settings import Settings


def date_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    # end_offset=1: without it today's partition does not exist until tomorrow. Without a start_date the
    # first date is a window before the day the code location loads (settings.first_date).
    today = clock_from_env().now().astimezone(settings.tz).date()
    return dg.DailyPartitionsDefinition(start_date=settings.first_date(today).isoformat(),
                                        timezone=settings.timezone, end_offset=1)


def phase_partitions(settings: Settings) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition({
        "date": date_partitions(settings),
        "phase": dg.StaticPartitionsDefinition(list(PHASES)),
    })


def split_key(key: str | dg.MultiPartitionKey) -> tuple[str, str]:
    """'2026-11-26|morning' (dimensions sort by name: date, then phase) -> ('2026-11-26', 'morning')."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return dims["date"], dims["phase"]
    day, phase = str(key).split("|")
    return day, phase


def phase_key(day: str, phase: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": day, "phase": phase})
