"""batch_sensor, every minute: collects Message Batches whose job stopped waiting for them (its run
ended, or it gave up waiting): ended ones are settled at the batch price under their holds, ones that
never answered release their holds. Then it asks for phase_job on each partition whose work waited for
batches that have all ended (a unit deferred for its batch, a summary written without its answer): the
run resumes that work under its own ids, so it takes the answers paid for it instead of asking again.
Its tick lists the day's batched requests by state."""
from __future__ import annotations

import dagster as dg

from cass_pipelines.defs.partitions import phase_key
from cass_pipelines.defs.resources import CassResource, run_over
from cass_pipelines.defs.ticks import BUSY, SENSOR_DB_DEADLINE_S, failed_runs, runs_ahead, unless_busy
from cass_pipelines.domain.batching import BatchState
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.domain.registry import Registry
from cass_pipelines.domain.settings import Settings
from cass_pipelines.services.watches import MAX_RESUME_FAILURES, Resume, batch_resumes, watch_batches
from cass_pipelines.store import batches


def build_batch_sensor(settings: Settings, registry: Registry,
                       phase_job_name: str = "phase_job") -> dg.SensorDefinition:
    @dg.sensor(name="batch_sensor", job_name=phase_job_name, minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Collects Message Batches (memory and night work) whose job stopped waiting: settles "
                           "each answer at the batch price under its hold, releases holds of requests that never "
                           "answered; runs a phase again whose work waited for them, to use their answers; lists "
                           "the day's batched requests by state (`cass-pipelines batches`).")
    def batch_sensor(context: dg.SensorEvaluationContext, cass: CassResource):
        clock = cass.clock()
        day, _ = phase_at(clock.now(), settings)
        store = cass.quick_store(SENSOR_DB_DEADLINE_S)

        def tick() -> tuple[dict[str, list[str]], dict[str, int], list[Resume]]:
            done = watch_batches(store, settings, clock, run_over(context.instance),
                                 lambda: cass.llm.get_client(settings))
            return done, batches.counts(store, day), batch_resumes(store, settings, registry, clock.now())

        result = unless_busy(tick)
        if result is BUSY:
            return BUSY
        done, counts, resumes = result
        given_up = [r for r in resumes if failed_resumes(context.instance, r) >= MAX_RESUME_FAILURES]
        # A resume still queued (behind the run holding the pool) or running is not asked for again: the
        # hour in its run key is for one that failed or was cancelled.
        ahead = [r for r in resumes if r not in given_up and runs_ahead(context.instance, RESUME_TAG, r.attempt)]
        if len(given_up) + len(ahead) < len(resumes):
            return [dg.RunRequest(run_key=r.run_key, partition_key=phase_key(r.date.isoformat(), r.phase),
                                  tags={"cass/phase": r.phase, "cass/date": r.date.isoformat(),
                                        "cass/trigger": "batch_sensor", RESUME_TAG: r.attempt})
                    for r in resumes if r not in given_up and r not in ahead]
        parts = [f"{day} batched requests: " + ", ".join(f"{state} {n}" for state, n in counts.items())]
        parts += [f"resuming {r.date} {r.phase}: its run is queued or running" for r in ahead]
        parts += [f"resuming {r.date} {r.phase} failed {MAX_RESUME_FAILURES} times: run "
                  f"`cass-pipelines run-phase {r.phase} --date {r.date}` once its failure is fixed" for r in given_up]
        parts += [f"{state} now: {', '.join(ids)}" for state, ids in done.items()
                  if ids and state != BatchState.SUBMITTED]
        return dg.SkipReason("; ".join(parts))

    return batch_sensor


RESUME_TAG = "cass/resume"   # a resume's runs: the partition and its work's requests (Resume.attempt)


def failed_resumes(instance: dg.DagsterInstance, resume: Resume) -> int:
    """How often a run resuming this work for these requests failed (batch_sensor's or run-day's)."""
    return failed_runs(instance, RESUME_TAG, resume.attempt)
