"""idle_memory_sensor runs memory_job for conversations that went idle with unsummarised messages, and
for a catch-up unit left waiting (a run that died mid-catch-up: its paid answers wait for it to end)."""
from __future__ import annotations

from datetime import datetime

import dagster as dg

from cass_pipelines.defs.resources import CassResource
from cass_pipelines.defs.ticks import BUSY, SENSOR_DB_DEADLINE_S, failed_runs, runs_ahead, unless_busy
from cass_pipelines.domain.categories import Category
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.domain.settings import Settings
from cass_pipelines.domain.states import DeferKind
from cass_pipelines.services.handlers.memory import waiting_catchup
from cass_pipelines.services.watches import idle_conversations
from cass_pipelines.store.control import lifted_at, paused_reason

MEMORY_ATTEMPT_TAG = "cass/memory_attempt"   # the idle messages a run was asked for: newest one | how many
MAX_MEMORY_FAILURES = 3
MEMORY = Category.MEMORY.value   # the catch-up's category (its pause holds the job's calls)


def build_idle_memory_sensor(settings: Settings, job) -> dg.SensorDefinition:
    @dg.sensor(name="idle_memory_sensor", job=job, minimum_interval_seconds=600,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Runs memory_job when conversations have been idle for "
                           f"{settings.idle_threshold_minutes} min or more with unsummarised messages.")
    def idle_memory_sensor(context: dg.SensorEvaluationContext, cass: CassResource):
        now = cass.clock().now()
        store = cass.quick_store(SENSOR_DB_DEADLINE_S)
        def look() -> tuple[str | None, datetime | None, list[dict], dict | None]:
            with store.session():   # one open for every read
                return (paused_reason(store, MEMORY), lifted_at(store, MEMORY),
                        idle_conversations(store, settings, now), waiting_catchup(store))

        looked = unless_busy(look)
        if looked is BUSY:
            return BUSY
        paused, lifted, idle, waiting = looked
        if paused:   # a run now would only defer its catch-up; the first tick after `resume` asks for it
            return dg.SkipReason(f"memory is paused: {paused}")
        # A catch-up the budget refused is asked for again once per budget day: each day brings new money;
        # one a pause deferred (its run started just before it) once per lifted pause.
        kind = waiting and waiting["defer_kind"]
        money = (f"|{phase_at(now, settings)[0]}" if kind == DeferKind.BUDGET else
                 f"|resumed {lifted:%Y-%m-%dT%H:%M:%S.%f}" if kind == DeferKind.PAUSED and lifted else "")
        if not idle:
            if waiting:   # once per unit (its run key)
                return dg.RunRequest(run_key=f"memory|waiting|{waiting['id']}{money}",
                                     tags={"cass/trigger": "idle_memory_sensor", "cass/catchup": waiting["id"]})
            return dg.SkipReason("no idle conversations with unsummarised messages")
        # The key changes only when new idle messages appear, so one batch is summarised once; after a run of
        # it failed (an outage), it is asked for again under a new key, up to MAX_MEMORY_FAILURES times.
        attempt = f"{max(c['last_message_at'] for c in idle).isoformat()}|{sum(c['pending'] for c in idle)}{money}"
        if runs_ahead(context.instance, MEMORY_ATTEMPT_TAG, attempt):   # (a daemon retry, a re-execution)
            return dg.SkipReason(f"a memory run for {len(idle)} idle conversation(s) is queued or running")
        failed = failed_runs(context.instance, MEMORY_ATTEMPT_TAG, attempt)
        if failed >= MAX_MEMORY_FAILURES:
            return dg.SkipReason(f"the memory run for {len(idle)} idle conversation(s) failed {failed} times; run "
                                 "memory_job (the UI's launchpad, or `cass-pipelines run-day`) once its failure is fixed")
        return dg.RunRequest(run_key=f"memory|{attempt}" + (f"|retry {failed}" if failed else ""),
                             tags={"cass/trigger": "idle_memory_sensor", "cass/conversations": str(len(idle)),
                                   MEMORY_ATTEMPT_TAG: attempt})

    return idle_memory_sensor
