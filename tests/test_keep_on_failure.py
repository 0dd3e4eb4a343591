"""A unit that fails, or stops early, before the steps that own what its earlier steps made: those
records are kept then as their owner writes them (handoff.keep_left_over), and a retry of the unit ends as
a run that never failed would (nothing lost, nothing written twice, no retry that cannot complete)."""
from __future__ import annotations

import importlib
import json
import os
import shutil

import pytest
from handlers_kit import sample_now

from cass_pipelines.config.registry import DEFAULT_REGISTRY_FILE
from cass_pipelines.domain.clock import FixedClock
from cass_pipelines.domain.states import UnitOrigin
from cass_pipelines.services.handlers.base import ActionResult
from cass_pipelines.services.handlers.handoff import WRITERS, _unwritten
from cass_pipelines.services.handlers.sourcing import NO_LIVE_SOURCE
from cass_pipelines.services.runner import job_unit, summarize
from cass_pipelines.services.runner import run_action as run_step
from cass_pipelines.services.runtime import open_runtime
from cass_pipelines.store import plans

KEEP_TEMPLATES = ["morning_reflection", "synthesis", "meta_reflection", "growth_edge_work", "curiosity_exploration",
                  "research_deep_dive", "research_batch", "knowledge_building", "world_check_in", "writing_session",
                  "user_synthesis", "memory_consolidation", "conversation_catchup", "open_question_review"]


def _fresh(tmp_path, sample_template, name):
    home = tmp_path / name
    shutil.copytree(sample_template, home)
    return open_runtime({**os.environ, "CASS_HOME": str(home)})


def _unit(rt, template, tag, focus="what I keep wondering"):
    now = sample_now(rt)
    return job_unit(rt, now.date(), "morning", template, tag, focus, now, origin=UnitOrigin.MANUAL), FixedClock(now)


def _snapshot(rt, uid):
    q = lambda sql: rt.store.scalar(sql, [uid])  # noqa: E731
    runs = plans.action_runs(rt.store, uid)
    results = [ActionResult.model_validate(r["result"]) for r in runs if r["result"]]
    pending = {k: len(_unwritten(results, k)[0]) for k in WRITERS if _unwritten(results, k)[0]}   # never written
    # (insight/question/observation counts are left out: the offline backend's output varies with the store)
    return {
        "status": plans.get_unit(rt.store, uid)["status"],
        "pending_left": pending,
        "wiki_notes": q("SELECT count(*) FROM wiki_notes WHERE work_unit_id = ?"),
        "documents": q("SELECT count(*) FROM documents WHERE work_unit_id = ?"),
        "titled": rt.store.scalar("SELECT count(*) FROM conversations WHERE title IS NOT NULL"),
    }


def _fail(monkeypatch, rt, action_id):
    module_name, _, name = rt.registry.actions[action_id].handler.partition(":")

    def failing(ctx):
        raise RuntimeError("IOException: could not set lock on file (test)")
    monkeypatch.setattr(importlib.import_module(module_name), name, failing)


# Each step after the first of each template, failed once (the first has nothing before it to keep).
_LENGTHS = {t["id"]: len(t["action_sequence"])
            for t in json.loads(DEFAULT_REGISTRY_FILE.read_text(encoding="utf-8"))["templates"]}
CASES = [(t, p) for t in KEEP_TEMPLATES for p in range(1, _LENGTHS[t])]


@pytest.mark.parametrize("template,fail_at", CASES)
def test_a_unit_failed_at_any_step_then_retried_ends_as_one_that_never_failed(tmp_path, sample_template, sample_home,
                                                                 monkeypatch, template, fail_at):
    base_rt = _fresh(tmp_path, sample_template, "base")
    n = len(base_rt.registry.templates[template].action_sequence)
    uid, clock = _unit(base_rt, template, "u")
    base_out = [run_step(base_rt, uid, p, clock) for p in range(n)]
    base = _snapshot(base_rt, uid)

    rt = _fresh(tmp_path, sample_template, "fail")
    uid, clock = _unit(rt, template, "u")
    assert all(run_step(rt, uid, p, clock).status == "completed" for p in range(fail_at))
    _fail(monkeypatch, rt, rt.registry.templates[template].action_sequence[fail_at])
    failed = run_step(rt, uid, fail_at, clock)
    monkeypatch.undo()
    plans.reopen_failed(rt.store, uid, "retried", clock.now())
    retry = [run_step(rt, uid, p, clock) for p in range(fail_at, n)]
    got = _snapshot(rt, uid)
    assert got == base, (failed.message, [o.message for o in retry], [o.message for o in base_out])


def _notes_of(rt, uid):
    return rt.store.all("SELECT id, title, body FROM wiki_notes WHERE work_unit_id = ? ORDER BY created_at", [uid])


def _answering(monkeypatch, module: str, name: str, **update) -> None:
    """The handler `module.name` runs as it does, and its result says what `update` says."""
    handlers = importlib.import_module(f"cass_pipelines.services.handlers.{module}")
    real = getattr(handlers, name)
    monkeypatch.setattr(handlers, name, lambda ctx: real(ctx).model_copy(update=update))


def _stored_artifact_ids(rt, uid):
    return {a["id"] for r in plans.action_runs(rt.store, uid) if r["result"] for a in r["result"]["artifacts"]}


def test_a_note_kept_when_a_step_returned_failure_stays_named_by_the_units_results_after_its_retry(runtime, monkeypatch):
    """research_deep_dive: session.research returns success=False. run_single's finding is kept as a note,
    named among run_single's artifacts (not the failed step's, whose result its retry replaces), so the
    work summary after the retry names it."""
    rt = runtime
    uid, clock = _unit(rt, "research_deep_dive", "dd_false")
    assert [run_step(rt, uid, p, clock).status for p in (0, 1)] == ["completed", "completed"]
    _answering(monkeypatch, "sessions", "research", success=False, message="the piece did not hold together")
    failed = run_step(rt, uid, 2, clock)
    assert failed.status == "failed" and "kept 1 record(s) of note" in failed.message, failed.message
    [kept_note] = _notes_of(rt, uid)
    assert kept_note["id"] in _stored_artifact_ids(rt, uid)
    monkeypatch.undo()
    plans.reopen_failed(rt.store, uid, "retried", clock.now())
    outs = [run_step(rt, uid, p, clock) for p in (2, 3)]
    assert [o.status for o in outs] == ["completed", "completed"], [o.message for o in outs]
    summary = summarize(rt, plans.get_unit(rt.store, uid), clock)
    named = json.dumps(summary["artifacts"], default=str)
    assert kept_note["id"] in _stored_artifact_ids(rt, uid) and kept_note["id"] in named, (
        f"kept note {kept_note['id']} ({kept_note['title']!r}) is named by no stored result; "
        f"stored artifacts: {sorted(_stored_artifact_ids(rt, uid))}")


def test_world_check_in_failed_then_retried_leaves_one_world_state_note_as_a_clean_run_does(runtime, monkeypatch):
    """A clean world_check_in writes one 'World state DATE' note (summarize_state composes the events and the
    session's view). Failing session.world_state once keeps the events in that note; the retry's session
    piece goes on in it, not in a second note of the same title."""
    rt = runtime
    uid, clock = _unit(rt, "world_check_in", "wc_twice")
    assert run_step(rt, uid, 0, clock).status == "completed"
    _fail(monkeypatch, rt, "session.world_state")
    assert "kept 1 record(s) of note" in run_step(rt, uid, 1, clock).message
    monkeypatch.undo()
    plans.reopen_failed(rt.store, uid, "retried", clock.now())
    assert [run_step(rt, uid, p, clock).status for p in (1, 2)] == ["completed", "completed"]
    titles = [n["title"] for n in _notes_of(rt, uid)]
    assert len(titles) == 1, titles


def test_a_world_note_kept_when_its_step_stopped_the_sequence_names_the_sources_that_step_used(
        runtime, monkeypatch):
    """The owner's writer sees every result, the ending step's too: a world note kept when check_events stopped
    the sequence (web search on) does not say that no live source was consulted."""
    rt = runtime
    rt.settings = rt.settings.model_copy(update={"web_search": True})
    uid, clock = _unit(rt, "world_check_in", "wc_abort")
    _answering(monkeypatch, "world", "check_events", abort_sequence=True, message="nothing worth a session")
    out = run_step(rt, uid, 0, clock)
    assert "kept 1 record(s) of note" in out.message, out.message
    [note] = _notes_of(rt, uid)
    sourced = ActionResult.model_validate(plans.action_runs(rt.store, uid)[0]["result"]).data["sourced"]
    assert sourced != NO_LIVE_SOURCE
    assert NO_LIVE_SOURCE not in note["body"], note["body"][-400:]


def test_a_step_that_returns_failure_leaves_a_dead_letter_as_one_that_raises(runtime, monkeypatch):
    """A unit failed by a handler's success=False is seen in `dlq list` and can be retried, as one that raised."""
    rt = runtime
    uid, clock = _unit(rt, "research_deep_dive", "dd_nodl")
    assert [run_step(rt, uid, p, clock).status for p in (0, 1)] == ["completed", "completed"]
    _answering(monkeypatch, "sessions", "research", success=False)
    out = run_step(rt, uid, 2, clock)
    assert out.status == "failed" and "kept" in out.message
    n = rt.store.scalar("SELECT count(*) FROM dead_letters WHERE work_unit_id = ?", [uid])
    assert n == 1, f"unit failed ({out.message[:120]}) with {n} dead letters"


def test_a_unit_kept_by_the_previous_version_can_still_be_retried(runtime, monkeypatch):
    """The first version of the kept mark was a list of kinds (["note"]); a unit kept then is still retried."""
    import importlib

    from handlers_kit import sample_now

    from cass_pipelines.domain.clock import FixedClock
    from cass_pipelines.domain.states import UnitOrigin
    from cass_pipelines.services.runner import job_unit
    from cass_pipelines.services.runner import run_action as run_step

    rt = runtime
    now = sample_now(rt)
    uid, clock = job_unit(rt, now.date(), "morning", "research_deep_dive", "old_kept", "what I keep wondering", now,
                          origin=UnitOrigin.JOB), FixedClock(now)
    assert [run_step(rt, uid, p, clock).status for p in (0, 1)] == ["completed", "completed"]
    sessions = importlib.import_module("cass_pipelines.services.handlers.sessions")

    def failing(ctx):
        raise RuntimeError("IOException: could not set lock on file (test)")
    monkeypatch.setattr(sessions, "research", failing)
    assert run_step(rt, uid, 2, clock).status == "failed"
    monkeypatch.undo()
    stored = plans.action_runs(rt.store, uid)[1]["result"]
    assert isinstance(stored["data"]["kept"], dict)
    plans.set_action_result(rt.store, uid, 1, {**stored, "data": {**stored["data"], "kept": ["note"]}})  # its first form
    plans.reopen_failed(rt.store, uid, "retried", clock.now())
    outs = [run_step(rt, uid, p, clock) for p in (2, 3)]
    assert [o.status for o in outs] == ["completed", "completed"], [o.message[:200] for o in outs]


def test_a_unit_failing_twice_keeps_one_note_as_a_clean_run_does(runtime, monkeypatch):
    """research_deep_dive fails at session.research (run_single's finding kept as a note); its retry runs the
    session and then fails at wiki.create_note: the session's piece is kept in the same note, so two
    failures leave one note, as a clean run does."""
    import importlib

    from handlers_kit import sample_now

    from cass_pipelines.domain.clock import FixedClock
    from cass_pipelines.domain.states import UnitOrigin
    from cass_pipelines.services.runner import job_unit
    from cass_pipelines.services.runner import run_action as run_step

    rt = runtime
    now = sample_now(rt)
    uid, clock = job_unit(rt, now.date(), "morning", "research_deep_dive", "twice", "what I keep wondering", now,
                          origin=UnitOrigin.JOB), FixedClock(now)

    def fail(action_id):
        module_name, _, name = rt.registry.actions[action_id].handler.partition(":")

        def failing(ctx):
            raise RuntimeError("IOException: could not set lock on file (test)")
        monkeypatch.setattr(importlib.import_module(module_name), name, failing)

    assert [run_step(rt, uid, p, clock).status for p in (0, 1)] == ["completed", "completed"]
    fail("session.research")
    assert run_step(rt, uid, 2, clock).status == "failed"
    monkeypatch.undo()
    plans.reopen_failed(rt.store, uid, "retried", clock.now())
    assert run_step(rt, uid, 2, clock).status == "completed"
    fail("wiki.create_note")
    assert run_step(rt, uid, 3, clock).status == "failed"
    monkeypatch.undo()
    plans.reopen_failed(rt.store, uid, "retried", clock.now())
    assert run_step(rt, uid, 3, clock).status == "completed"
    notes = rt.store.all("SELECT id, title FROM wiki_notes WHERE work_unit_id = ? ORDER BY created_at", [uid])
    assert len(notes) == 1, f"two failures left {len(notes)} notes: {notes}"
