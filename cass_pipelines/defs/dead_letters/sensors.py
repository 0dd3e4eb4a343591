"""dead_letter_sensor: reports new dead letters (failed actions, items parked after their retries)."""
from __future__ import annotations

import json
from datetime import datetime

import dagster as dg

from cass_pipelines.defs.resources import CassResource
from cass_pipelines.defs.ticks import BUSY, SENSOR_DB_DEADLINE_S, unless_busy
from cass_pipelines.store import dead_letters


def build_dead_letter_sensor() -> dg.SensorDefinition:
    @dg.sensor(name="dead_letter_sensor", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Reports new dead letters (failed actions, items parked after their retries); see `cass-pipelines dlq`.")
    def dead_letter_sensor(context: dg.SensorEvaluationContext, cass: CassResource):
        after = json.loads(context.cursor) if context.cursor else None
        rows = unless_busy(lambda: dead_letters.after(
            cass.quick_store(SENSOR_DB_DEADLINE_S), (datetime.fromisoformat(after[0]), after[1]) if after else None))
        if rows is BUSY:
            return BUSY
        if not rows:
            return dg.SkipReason("no new dead letters")
        last = rows[-1]
        context.update_cursor(json.dumps([last["created_at"].isoformat(), last["id"]]))
        lines = [f"{r['id']} {r['date']} {r['phase'] or ''} "
                 + (f"unit {r['work_unit_id']} action {r['action_id']} (run {(r['run_id'] or '')[:8]})"
                    if r["kind"] == "action" else f"{r['kind']} {r['item_id']}")
                 + f": {r['error'][:200]}" for r in rows]
        for line in lines:
            context.log.error(f"dead letter: {line}")
        return dg.SkipReason(f"{len(rows)} new dead letter(s): " + " | ".join(lines))

    return dead_letter_sensor
