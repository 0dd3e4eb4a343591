"""Work that outwaited its message batch is resumed under its own ids by its phase's next run, asked
for by batch_sensor (run-day runs it first): when, and when not (tests/test_batches.py has the whole
path at the wire). Each case starts from what an outwaited batch leaves: a night unit started and
deferred `batch`, its request collected and not yet used."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
from support import SAMPLE_DAY, TODAY, seed_plan
from test_reliability import api_home  # noqa: F401  (fixture: the sample agent on the real SDK, loopback API)

from cass_pipelines.definitions import build_defs
from cass_pipelines.domain.clock import FixedClock, clock_from_env
from cass_pipelines.domain.pauses import LookBacks
from cass_pipelines.domain.states import DeferKind, UnitStatus
from cass_pipelines.services.metering import MeterContext
from cass_pipelines.services.planning import plan_phase, take_back_waiting
from cass_pipelines.services.runner import metered
from cass_pipelines.services.runtime import open_runtime
from cass_pipelines.services.watches import batch_resumes
from cass_pipelines.store import control, plans

NIGHT = datetime.combine(SAMPLE_DAY, datetime.min.time(), timezone.utc).replace(hour=23)
JOURNAL = plans.unit_id(SAMPLE_DAY, "night", "journal")   # the day's own journal unit (journal_job's)
OLD = TODAY - timedelta(days=33)                          # before the partition window (30 days)


def night_with_a_waiting_unit(rt):
    llm = metered(rt, FixedClock(NIGHT), MeterContext(date=SAMPLE_DAY, phase="night", category="system",
                                                      priority="high", work_unit_id=None, action_id="plan.decide"))
    plan_phase(rt, llm, SAMPLE_DAY, "night", NIGHT)
    unit = [u for u in plans.units_for_phase(rt.store, SAMPLE_DAY, "night") if u["status"] == "planned"][0]
    rt.store.execute("UPDATE work_units SET status = 'deferred', defer_kind = 'batch', started_at = ?, "
                     "reason = 'waiting for message batch b1' WHERE id = ?", [NIGHT, unit["id"]])
    rt.store.execute("""INSERT INTO llm_batches (custom_id, request_key, batch_id, state, reservation_id, date, phase,
        category, priority, work_unit_id, action_id, model, request, submitted_at, ended_at, result_text, request_id)
        VALUES ('c1', 'k1', 'b1', 'collected', 'r1', ?, 'night', ?, 'normal', ?, 'a', 'm', '{}', ?, ?, 'x', 'q1')""",
                     [SAMPLE_DAY, unit["category"], unit["id"], NIGHT, NIGHT])
    return llm, unit


def resumes(rt, now=NIGHT) -> list[str]:
    return [r.run_key for r in batch_resumes(rt.store, rt.settings, rt.registry, now)]


def batch_sensor_tick(defs, instance):
    """One tick of batch_sensor, evaluated by Dagster against `instance`."""
    with dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def(),
                                 resources=defs.resources) as ctx:
        return defs.resolve_sensor_def("batch_sensor").evaluate_tick(ctx)


def test_a_resume_is_asked_for_once_its_batches_end_and_again_each_hour_until_it_takes(sample_home):
    rt = open_runtime()
    _, unit = night_with_a_waiting_unit(rt)
    assert resumes(rt) == [f"batch-resume|{SAMPLE_DAY}|night|1|{NIGHT:%Y-%m-%dT%H}"]
    # A resume that failed or was cancelled (Dagster never launches a run key twice) is asked for again
    # within the hour, not every tick.
    assert resumes(rt, NIGHT + timedelta(minutes=59, seconds=59)) == resumes(rt)
    assert resumes(rt, NIGHT + timedelta(hours=1)) != resumes(rt)
    rt.store.execute("UPDATE llm_batches SET state = 'submitted'")
    assert resumes(rt) == []                                         # its batch is still running
    rt.store.execute("UPDATE llm_batches SET state = 'collected'")
    assert take_back_waiting(rt, SAMPLE_DAY, "night", NIGHT) == [unit["id"]]
    assert resumes(rt) == []                                         # taken back: nothing waits


def test_work_of_a_paused_category_is_asked_for_once_the_category_is_resumed(sample_home):
    rt = open_runtime()
    _, unit = night_with_a_waiting_unit(rt)
    control.pause(rt.store, unit["category"], "a person paused it", NIGHT)
    assert resumes(rt) == []                       # its run would take nothing back
    assert take_back_waiting(rt, SAMPLE_DAY, "night", NIGHT) == []
    control.resume(rt.store, unit["category"], NIGHT)
    assert resumes(rt) == [f"batch-resume|{SAMPLE_DAY}|night|1|{NIGHT:%Y-%m-%dT%H}"]
    later = plans.pending_deferred(rt.store, LookBacks(SAMPLE_DAY - timedelta(days=7)), SAMPLE_DAY + timedelta(days=1), 0)
    assert unit["id"] not in [w["id"] for w in later]     # never offered again as new work


def test_work_with_a_step_of_a_paused_category_still_to_run_is_asked_for_once_it_is_resumed(sample_home):
    """The waiting unit's batched call is its first step; a later step (research.run_single) is of a paused
    category: its run would not take it back (it would stop there), so none is asked for until `resume`."""
    rt = open_runtime()
    _, unit = night_with_a_waiting_unit(rt)
    rt.store.execute("UPDATE work_units SET template_id = 'open_question_review', category = 'curiosity' "
                     "WHERE id = ?", [unit["id"]])
    control.pause(rt.store, "research", "a person paused it", NIGHT)
    assert resumes(rt) == [] and take_back_waiting(rt, SAMPLE_DAY, "night", NIGHT) == []
    control.resume(rt.store, "research", NIGHT)
    assert resumes(rt) == [f"batch-resume|{SAMPLE_DAY}|night|1|{NIGHT:%Y-%m-%dT%H}"]
    assert take_back_waiting(rt, SAMPLE_DAY, "night", NIGHT) == [unit["id"]]


def test_a_new_plan_revision_still_takes_the_waiting_unit_back(sample_home):
    rt = open_runtime()
    llm, unit = night_with_a_waiting_unit(rt)
    plan_phase(rt, llm, SAMPLE_DAY, "evening", NIGHT, replan=True)     # the day planned again: revision 2
    assert plans.latest_day_plan(rt.store, SAMPLE_DAY)["revision"] == 2
    plan_phase(rt, llm, SAMPLE_DAY, "night", NIGHT)                    # the resume opens the night anew
    assert plans.get_unit(rt.store, unit["id"])["status"] == UnitStatus.PLANNED
    assert resumes(rt) == []


def test_a_waiting_unit_whose_template_is_gone_is_deferred_as_gone_not_run(sample_home):
    rt = open_runtime()
    _, unit = night_with_a_waiting_unit(rt)
    rt.store.execute("UPDATE work_units SET template_id = 'removed_template' WHERE id = ?", [unit["id"]])
    assert take_back_waiting(rt, SAMPLE_DAY, "night", NIGHT) == []
    after = plans.get_unit(rt.store, unit["id"])
    assert (after["status"], after["defer_kind"]) == (UnitStatus.DEFERRED, DeferKind.GONE)
    assert "removed_template" in after["reason"] and resumes(rt) == []


def test_job_units_and_dates_before_the_partition_window_are_not_asked_for(sample_home):
    rt = open_runtime()
    old = TODAY - timedelta(days=40)
    rt.store.execute("""INSERT INTO work_units (id, date, phase, position, template_id, category, focus, motivation,
        status, defer_kind, estimated_cost_usd, origin, created_at) VALUES
        ('old1', ?, 'night', 0, 'meta_reflection', 'reflection', 'f', 'm', 'deferred', 'batch', 0, 'plan', ?),
        ('j1', ?, 'night', 99, 'daily_journal', 'journal', 'f', 'm', 'completed', NULL, 0, 'job', ?)""",
                     [old, NIGHT, SAMPLE_DAY, NIGHT])
    rt.store.execute("""INSERT INTO work_summaries (work_unit_id, date, phase, template_id, status, narrative,
        key_insights, questions_raised, questions_addressed, artifacts, cost_usd, offline, awaiting_batch, created_at)
        VALUES ('j1', ?, 'night', 'daily_journal', 'completed', 'n', '[]', '[]', '[]', '[]', 0, false, true, ?)""",
                     [SAMPLE_DAY, NIGHT])
    now = clock_from_env().now()
    assert resumes(rt, now) == []
    defs = build_defs(rt.settings, rt.registry)   # and the sensor's tick does not fail on them
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def(),
                                     resources=defs.resources) as ctx:
            result = defs.resolve_sensor_def("batch_sensor").evaluate_tick(ctx)
    assert result.run_requests == [] and "batched requests" in result.skip_message


def test_a_resume_that_failed_three_times_for_the_same_requests_is_left_to_a_person(sample_home):
    from dagster._core.test_utils import create_run_for_test

    rt = open_runtime()
    night_with_a_waiting_unit(rt)
    [resume] = batch_resumes(rt.store, rt.settings, rt.registry, clock_from_env().now())
    defs = build_defs(rt.settings, rt.registry)
    with dg.instance_for_test() as instance:
        for _ in range(3):
            [request] = batch_sensor_tick(defs, instance).run_requests
            assert request.tags["cass/resume"] == resume.attempt == f"{SAMPLE_DAY}|night|1"
            create_run_for_test(instance, job_name="phase_job", status=dg.DagsterRunStatus.FAILURE,
                                tags={"cass/resume": resume.attempt})
        given_up = batch_sensor_tick(defs, instance)
        assert given_up.run_requests == []
        assert f"resuming {SAMPLE_DAY} night failed 3 times" in given_up.skip_message
        assert f"run-phase night --date {SAMPLE_DAY}" in given_up.skip_message


def test_a_resume_still_queued_or_running_is_not_asked_for_again(sample_home):
    """The hour in a resume's run key is for one that failed: a resume waiting in the queue behind the run
    holding the pool (or running) is not queued again each hour."""
    from dagster._core.test_utils import create_run_for_test

    rt = open_runtime()
    night_with_a_waiting_unit(rt)
    defs = build_defs(rt.settings, rt.registry)
    with dg.instance_for_test() as instance:
        from cass_pipelines.execution import job_origins

        [request] = batch_sensor_tick(defs, instance).run_requests
        queued = create_run_for_test(instance, job_name="phase_job", status=dg.DagsterRunStatus.QUEUED,
                                     tags=request.tags, remote_job_origin=job_origins("phase_job")[0])
        waiting = batch_sensor_tick(defs, instance)
        assert waiting.run_requests == [] and f"resuming {SAMPLE_DAY} night: its run is queued" in waiting.skip_message
        instance.report_run_canceled(queued)
        assert [r.tags["cass/resume"] for r in batch_sensor_tick(defs, instance).run_requests] == [request.tags["cass/resume"]]


def test_a_resume_run_left_not_started_does_not_block_the_resume_for_ever(sample_home):
    """A run that never left NOT_STARTED (run-day killed between creating and executing it; a sensor daemon
    that died between creating and submitting it) is not queued or running: nothing will start it, so
    batch_sensor asks again."""
    from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG
    from dagster._core.test_utils import create_run_for_test

    from cass_pipelines.execution import job_origins

    rt = open_runtime()
    night_with_a_waiting_unit(rt)
    defs = build_defs(rt.settings, rt.registry)
    with dg.instance_for_test() as instance:
        [request] = batch_sensor_tick(defs, instance).run_requests
        create_run_for_test(instance, job_name="phase_job", status=dg.DagsterRunStatus.NOT_STARTED,
                            tags={**request.tags, RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: "batch_sensor"},
                            remote_job_origin=job_origins("phase_job")[0])
        again = batch_sensor_tick(defs, instance)
        assert [r.tags["cass/resume"] for r in again.run_requests] == [request.tags["cass/resume"]], again.skip_message


def test_a_summary_of_a_gone_template_is_written_from_the_record_and_waits_no_more(sample_home):
    from cass_pipelines.llm.base import LLMClient
    from cass_pipelines.services.handlers.base import ActionResult
    from cass_pipelines.services.summaries import summarize_unit

    rt = open_runtime()
    unit = {"id": "u_gone", "date": SAMPLE_DAY, "phase": "night", "template_id": "removed_template",
            "status": UnitStatus.COMPLETED, "focus": "rest", "motivation": "m", "error": None}
    rt.store.execute("""INSERT INTO work_summaries (work_unit_id, date, phase, template_id, status, narrative,
        key_insights, questions_raised, questions_addressed, artifacts, cost_usd, offline, awaiting_batch, created_at)
        VALUES ('u_gone', ?, 'night', 'removed_template', 'completed', 'n', '[]', '[]', '[]', '[]', 0, false, true, ?)""",
                     [SAMPLE_DAY, NIGHT])

    class NoCalls(LLMClient):   # a model call here would be a defect
        def __getattr__(self, name):
            raise AssertionError(f"called the model: {name}")

    row = summarize_unit(rt.store, NoCalls(), rt.settings, rt.registry, unit,
                         [ActionResult(success=True, message="reflected")], NIGHT)
    assert not row["awaiting_batch"] and "step 1: reflected." in row["narrative"]


def test_a_days_phases_wait_for_its_journal_and_earlier_journals_stay_in_the_window(sample_home):
    from cass_pipelines.services.watches import waiting_journals

    rt = open_runtime()
    night_with_a_waiting_unit(rt)
    rt.store.execute("""INSERT INTO work_units (id, date, phase, position, template_id, category, focus, motivation,
        status, defer_kind, estimated_cost_usd, origin, created_at) VALUES
        (?, ?, 'night', 99, 'daily_journal', 'journal', 'f', 'm', 'deferred', 'batch', 0, 'job', ?),
        (?, ?, 'night', 99, 'daily_journal', 'journal', 'f', 'm', 'deferred', 'budget', 0, 'job', ?)""",
                     [JOURNAL, SAMPLE_DAY, NIGHT, plans.unit_id(OLD, "night", "journal"), OLD, NIGHT])
    assert resumes(rt) == []         # the journal's retry first: the resume would change its prompt
    assert waiting_journals(rt.store, rt.settings, SAMPLE_DAY + timedelta(days=1), TODAY) == [SAMPLE_DAY]
    # A deferred journal before the partition window is not asked for (its partition does not exist).
    assert waiting_journals(rt.store, rt.settings, TODAY - timedelta(days=28), TODAY) == []
    rt.store.execute("UPDATE work_units SET status = 'completed', defer_kind = NULL WHERE id = ?", [JOURNAL])
    assert resumes(rt) == [f"batch-resume|{SAMPLE_DAY}|night|1|{NIGHT:%Y-%m-%dT%H}"]


def test_a_journal_that_waited_for_its_batch_is_written_again_once_it_ends_then_the_day_resumes(sample_home):
    from cass_pipelines.services.watches import batch_journals

    rt = open_runtime()
    night_with_a_waiting_unit(rt)
    rt.store.execute("""INSERT INTO work_units (id, date, phase, position, template_id, category, focus, motivation,
        status, defer_kind, estimated_cost_usd, origin, created_at, started_at) VALUES
        (?, ?, 'night', 99, 'daily_journal', 'journal', 'f', 'm', 'deferred', 'batch', 0, 'job', ?, ?)""",
                     [JOURNAL, SAMPLE_DAY, NIGHT, NIGHT])
    rt.store.execute("""INSERT INTO llm_batches (custom_id, request_key, batch_id, state, reservation_id, date, phase,
        category, priority, work_unit_id, action_id, model, request, submitted_at)
        VALUES ('cj', 'kj', 'b2', 'submitted', 'rj', ?, 'night', 'journal', 'normal', ?, 'journal.generate_daily',
                'm', '{}', ?)""", [SAMPLE_DAY, JOURNAL, NIGHT])
    # A rewrite of that journal (`rewrite: true`, its own tag) waiting for its batch: not the day's own.
    rt.store.execute("""INSERT INTO work_units (id, date, phase, position, template_id, category, focus, motivation,
        status, defer_kind, estimated_cost_usd, origin, created_at, started_at) VALUES
        (?, ?, 'night', 98, 'daily_journal', 'journal', 'f', 'm', 'deferred', 'batch', 0, 'job', ?, ?)""",
                     [plans.unit_id(SAMPLE_DAY, "night", "journal_120000"), SAMPLE_DAY, NIGHT, NIGHT])
    now = clock_from_env().now()
    assert batch_journals(rt.store, rt.settings, now) == [] and resumes(rt, now) == []   # its batch runs
    rt.store.execute("UPDATE llm_batches SET state = 'collected' WHERE custom_id = 'cj'")
    assert batch_journals(rt.store, rt.settings, now) == [(SAMPLE_DAY, 1)]
    assert resumes(rt, now) == []                        # the day's phases wait for their journal
    defs = build_defs(rt.settings, rt.registry)
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def(),
                                     resources=defs.resources) as ctx:
            [request] = defs.resolve_sensor_def("journal_resume_sensor").evaluate_tick(ctx).run_requests
    assert request.partition_key == SAMPLE_DAY.isoformat() and request.run_key == f"journal|{SAMPLE_DAY}|batch|1"
    rt.store.execute("UPDATE work_units SET status = 'completed', defer_kind = NULL WHERE id = ?", [JOURNAL])
    assert batch_journals(rt.store, rt.settings, now) == [] and len(resumes(rt, now)) == 1   # the rewrite waits alone


def test_a_unit_whose_batches_keep_coming_back_without_an_answer_is_offered_again_as_new_work(sample_home):
    """Each time its batch outlasted the wait and then came back errored (nothing billed): resumed twice,
    then, at the third, offered again as new work instead of resuming without end."""
    rt = open_runtime()
    _, unit = night_with_a_waiting_unit(rt)
    rt.store.execute("UPDATE llm_batches SET state = 'failed', used = TRUE")
    # Three different requests failing in one batch is one time, not three.
    for key in ("ka", "kb"):
        rt.store.execute(f"""INSERT INTO llm_batches SELECT * REPLACE ('c_{key}' AS custom_id, '{key}' AS request_key)
                             FROM llm_batches WHERE custom_id = 'c1'""")
    assert take_back_waiting(rt, SAMPLE_DAY, "night", NIGHT) == [unit["id"]]
    rt.store.execute("DELETE FROM llm_batches WHERE custom_id IN ('c_ka', 'c_kb')")
    rt.store.execute("UPDATE work_units SET status = 'deferred', defer_kind = 'batch' WHERE id = ?", [unit["id"]])
    for n in (2, 3):
        rt.store.execute(f"""INSERT INTO llm_batches SELECT * REPLACE ('c{n}' AS custom_id) FROM llm_batches
                             WHERE custom_id = 'c1'""")
        if n == 2:
            assert take_back_waiting(rt, SAMPLE_DAY, "night", NIGHT) == [unit["id"]]    # two failed: resumed
            rt.store.execute("UPDATE work_units SET status = 'deferred', defer_kind = 'batch' WHERE id = ?",
                             [unit["id"]])
    # Not while another request of it is pending: its answer would be billed, and asked for again.
    rt.store.execute("""INSERT INTO llm_batches SELECT * REPLACE ('c_p' AS custom_id, 'kp' AS request_key,
                        'submitted' AS state) FROM llm_batches WHERE custom_id = 'c1'""")
    assert take_back_waiting(rt, SAMPLE_DAY, "night", NIGHT) == [unit["id"]]
    rt.store.execute("DELETE FROM llm_batches WHERE custom_id = 'c_p'")
    rt.store.execute("UPDATE work_units SET status = 'deferred', defer_kind = 'batch' WHERE id = ?", [unit["id"]])
    assert take_back_waiting(rt, SAMPLE_DAY, "night", NIGHT) == []
    after = plans.get_unit(rt.store, unit["id"])
    assert (after["status"], after["defer_kind"]) == (UnitStatus.DEFERRED, DeferKind.BATCH_FAILED)
    assert "without an answer 3 times" in after["reason"] and resumes(rt) == []
    later = plans.pending_deferred(rt.store, LookBacks(SAMPLE_DAY - timedelta(days=7)), SAMPLE_DAY + timedelta(days=1), 0)
    assert unit["id"] in [w["id"] for w in later]                                   # offered again as new work


def test_a_unit_a_pause_deferred_while_it_held_paid_answers_is_resumed_not_offered_anew(sample_home):
    """A category pause lands between the resume's take-back and the unit's action: the unit is deferred
    `paused` still holding its collected answer. After `resume` its own phase resumes it (so the answer
    is used); it is not offered again as new work, which would ask afresh."""
    from cass_pipelines.services.runner import run_action

    rt = open_runtime()
    _, unit = night_with_a_waiting_unit(rt)
    assert take_back_waiting(rt, SAMPLE_DAY, "night", NIGHT) == [unit["id"]]
    control.pause(rt.store, unit["category"], "paused meanwhile", NIGHT)
    assert run_action(rt, unit["id"], 0, FixedClock(NIGHT), run_id="resume_run").status == "deferred"
    assert plans.get_unit(rt.store, unit["id"])["defer_kind"] == DeferKind.PAUSED
    assert resumes(rt) == []                                   # paused: nothing asked for
    control.resume(rt.store, unit["category"], NIGHT)
    later = plans.pending_deferred(rt.store, LookBacks(SAMPLE_DAY - timedelta(days=7)), SAMPLE_DAY + timedelta(days=1), 0)
    assert unit["id"] not in [w["id"] for w in later]
    assert resumes(rt) == [f"batch-resume|{SAMPLE_DAY}|night|1|{NIGHT:%Y-%m-%dT%H}"]
    assert take_back_waiting(rt, SAMPLE_DAY, "night", NIGHT) == [unit["id"]]
    # A day's journal a pause deferred while it held its answer does not hold back that day's phases
    # (journal_schedule's catch-up writes it again once the pause is lifted).
    rt.store.execute("""INSERT INTO work_units (id, date, phase, position, template_id, category, focus, motivation,
        status, defer_kind, estimated_cost_usd, origin, created_at, started_at) VALUES
        (?, ?, 'night', 99, 'daily_journal', 'journal', 'f', 'm', 'deferred', 'paused', 0, 'job', ?, ?)""",
                     [JOURNAL, SAMPLE_DAY, NIGHT, NIGHT])
    rt.store.execute("""INSERT INTO llm_batches SELECT * REPLACE ('cj' AS custom_id, 'kj' AS request_key,
                        ? AS work_unit_id) FROM llm_batches WHERE custom_id = 'c1'""", [JOURNAL])
    rt.store.execute("UPDATE work_units SET status = 'deferred', defer_kind = 'paused' WHERE id = ?", [unit["id"]])
    assert len(resumes(rt)) == 1
    rt.store.execute("DELETE FROM llm_batches WHERE custom_id = 'cj'")
    # Without answers held, a paused unit is offered again as before.
    rt.store.execute("UPDATE llm_batches SET used = TRUE")
    rt.store.execute("UPDATE work_units SET status = 'deferred', defer_kind = 'paused' WHERE id = ?", [unit["id"]])
    later = plans.pending_deferred(rt.store, LookBacks(SAMPLE_DAY - timedelta(days=7)), SAMPLE_DAY + timedelta(days=1), 0)
    assert unit["id"] in [w["id"] for w in later] and resumes(rt) == []


def test_a_night_narrative_resumed_after_its_batch_uses_the_answer_paid_for_it(api_home):  # noqa: F811
    """The night's day_narrative call goes out in a batch that outlasts the wait; the other night units
    finish meanwhile. When it resumes the next morning, it tells the day as it stood when it first started
    (rhythm._asof), so its prompt and request key are the same and the answer paid for it is used, not
    asked and paid again. (Found by a three-week soak: paid five times over one night's resumes.)"""
    from test_reliability import cli

    env, server = api_home
    config = Path(env["CASS_HOME"]) / "cass.toml"
    config.write_text("batch_wait_s = 0.5\n" + config.read_text(encoding="utf-8"), encoding="utf-8")
    rt = open_runtime()
    seed_plan(rt, SAMPLE_DAY, "night", ["system_maintenance", "day_narrative"])
    [narrative] = [u for u in rt.store.all("SELECT id, template_id FROM work_units WHERE date = ? AND phase = 'night'",
                                           [SAMPLE_DAY]) if u["template_id"] == "day_narrative"]
    server.batch_delay_s = 3                      # the night's batch outlasts the wait
    night = cli(env, "run-day", "--date", SAMPLE_DAY.isoformat(), "--phases", "night", "--no-journal")
    assert night.returncode == 0, night.stderr[-2000:]
    assert rt.store.scalar("SELECT defer_kind FROM work_units WHERE id = ?", [narrative["id"]]) == "batch"
    server.batch_delay_s = 0                      # it has ended by the next morning
    for day in (SAMPLE_DAY + timedelta(days=1), SAMPLE_DAY + timedelta(days=2)):
        after = cli(env, "run-day", "--date", day.isoformat(), "--phases", "morning", "--no-journal")
        assert after.returncode == 0, after.stderr[-2000:]
    assert rt.store.scalar("SELECT status FROM work_units WHERE id = ?", [narrative["id"]]) == "completed"
    paid = rt.store.all("SELECT request_id, run_id FROM llm_ledger WHERE work_unit_id = ? "
                        "AND action_id = 'rhythm.generate_daily_narrative'", [narrative["id"]])
    assert len(paid) == 1, paid                   # one answer paid for, and that one used
