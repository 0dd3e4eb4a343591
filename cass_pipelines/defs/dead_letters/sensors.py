"""dead_letter_sensor: reports new dead letters (failed actions, items parked after their retries)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import dagster as dg

from cass_pipelines.defs.resources import CassResource
from cass_pipelines.defs.ticks import BUSY, SENSOR_DB_DEADLINE_S, unless_busy
from cass_pipelines.store import dead_letters

# A dead letter is stamped by its run's clock, which may be minutes before its insert (the memory catch-up
# stamps a conversation it parks with its own start; an open may wait for the file): the cursor keeps the
# ids reported in the last REPORTED_WINDOW, not only the newest stamp, so a later insert stamped earlier is
# still reported once.
REPORTED_WINDOW = timedelta(days=1)


def reported_since(cursor: str | None) -> dict[str, str]:
    """The cursor's dead letters reported (id -> created_at ISO); an earlier cursor was the last one's
    [created_at, id]."""
    state = json.loads(cursor) if cursor else {}
    return {state[1]: state[0]} if isinstance(state, list) else state


def build_dead_letter_sensor() -> dg.SensorDefinition:
    @dg.sensor(name="dead_letter_sensor", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Reports new dead letters (failed actions, items parked after their retries); see `cass-pipelines dlq`.")
    def dead_letter_sensor(context: dg.SensorEvaluationContext, cass: CassResource):
        reported = reported_since(context.cursor)
        since = max(map(datetime.fromisoformat, reported.values())) - REPORTED_WINDOW if reported else None
        rows = unless_busy(lambda: dead_letters.open_since(cass.quick_store(SENSOR_DB_DEADLINE_S), since, list(reported)))
        if rows is BUSY:
            return BUSY
        if not rows:
            return dg.SkipReason("no new dead letters")
        reported.update({r["id"]: r["created_at"].isoformat() for r in rows})
        newest = max(datetime.fromisoformat(t) for t in reported.values())
        context.update_cursor(json.dumps({i: t for i, t in reported.items()
                                          if datetime.fromisoformat(t) >= newest - REPORTED_WINDOW}))
        lines = [f"{r['id']} {r['date']} {r['phase'] or ''} "
                 + (f"unit {r['work_unit_id']} action {r['action_id']} (run {(r['run_id'] or '')[:8]})"
                    if r["kind"] == "action" else f"{r['kind']} {r['item_id']}")
                 + f": {r['error'][:200]}" for r in rows]
        for line in lines:
            context.log.error(f"dead letter: {line}")
        return dg.SkipReason(f"{len(rows)} new dead letter(s): " + " | ".join(lines))

    return dead_letter_sensor
