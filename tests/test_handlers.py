"""Every registry action runs offline against the sample data and leaves rows a person can open."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from handlers_kit import CountingLLM, FailingLLM, context, count, run_action, run_template, sample_now

from cass_pipelines.domain.clock import FixedClock
from cass_pipelines.domain.plan_rules import PlannedUnit
from cass_pipelines.domain.states import UnitOrigin
from cass_pipelines.llm.base import LLMError
from cass_pipelines.services.handlers.base import ARTIFACT_TABLES, ActionResult
from cass_pipelines.services.handlers.handoff import keep_left_over
from cass_pipelines.services.handlers.sourcing import NO_LIVE_SOURCE
from cass_pipelines.services.metering import BudgetRefused
from cass_pipelines.services.runner import job_unit, summarize
from cass_pipelines.services.runner import run_action as run_step
from cass_pipelines.store import budget, notes, plans

OFFLINE_TABLES = {"insights", "growth_observations", "open_questions", "conversation_summaries", "journals",
                  "wiki_notes", "documents"}
# The templates the tests below run, and the actions no template holds that they run directly.
TESTED_TEMPLATES = {"morning_reflection", "synthesis", "meta_reflection", "user_synthesis", "growth_edge_work",
                    "curiosity_exploration", "research_deep_dive", "research_batch", "open_question_review",
                    "world_check_in", "knowledge_building", "writing_session", "creative_session",
                    "memory_consolidation", "conversation_catchup", "phase_wrapup", "day_narrative", "nightly_dream",
                    "daily_journal", "system_maintenance"}
TESTED_DIRECTLY = {"memory.summarize_conversation", "self.add_open_question"}


def stored(rt, results: list[ActionResult]) -> list[dict]:
    """Each artifact's row, asserting it exists (and, for model-made rows, that it says offline)."""
    rows = []
    for r in results:
        for a in r.artifacts:
            table = ARTIFACT_TABLES[a.type]
            if table == "journals":
                day, kind = a.id.split("/")
                row = rt.store.one("SELECT * FROM journals WHERE date = ? AND kind = ?", [day, kind])
            else:
                row = rt.store.one(f"SELECT * FROM {table} WHERE id = ?", [a.id])
            assert row is not None, f"{a.location} named by '{r.message}' is not in the store"
            if table in OFFLINE_TABLES and r.offline:
                assert row["offline"] is True, a.location
            rows.append(row)
    return rows


def run(rt, template_id: str, **kw) -> list[ActionResult]:
    assert template_id in TESTED_TEMPLATES
    results = run_template(rt, template_id, **kw)
    assert all(r.success for r in results), [r.message for r in results]
    return results


def test_reflection_insights_written_once_by_record_insight(runtime):
    session, record = run(runtime, "morning_reflection")
    assert session.insights and session.offline
    assert session.data["pending"]["insights"] and "insights" not in session.data["wrote"]
    rows = stored(runtime, [record])
    assert [r["text"] for r in rows] == session.insights
    assert {r["action_id"] for r in rows} == {"session.reflection"} and {r["kind"] for r in rows} == {"reflection"}
    assert count(runtime, "SELECT count(*) FROM insights") == len(session.insights)   # no double write
    doc = runtime.store.one("SELECT * FROM documents WHERE kind = 'reflection'")
    assert doc["body"] and doc["offline"] and doc["work_unit_id"] == "unit_morning_reflection"


def test_synthesis_keeps_its_piece_as_a_wiki_note(runtime):
    results = run(runtime, "synthesis")
    note = stored(runtime, results[2:])[0]
    assert note["title"] == results[0].data["title"] and note["body"]
    assert count(runtime, "SELECT count(*) FROM documents") == 0      # the piece went to the wiki only
    assert count(runtime, "SELECT count(*) FROM insights") == len(results[0].insights)


def test_meta_reflection_and_user_synthesis(runtime):
    meta, record = run(runtime, "meta_reflection")
    stored(runtime, [meta, record])
    assert meta.data["pending"].get("observations") is None   # no later owner: the session wrote them
    user, observe = run(runtime, "user_synthesis")
    obs = stored(runtime, [observe])
    assert obs and all(o["edge_id"].startswith("edge_") and o["offline"] for o in obs)
    assert runtime.store.one("SELECT * FROM documents WHERE kind = 'user_synthesis'")


def test_growth_edge_session_restates_the_focus_edge(runtime):
    before = runtime.store.one("SELECT current_state FROM growth_edges WHERE id = 'edge_pushback'")
    session, observe, update = run(runtime, "growth_edge_work", focus="disagreeing kindly")
    assert {o["edge_id"] for o in session.data["pending"]["observations"]} == {"edge_pushback"}
    assert stored(runtime, [observe])
    edge, change = stored(runtime, [update])
    assert edge["id"] == "edge_pushback" and edge["current_state"] != before["current_state"]
    assert before["current_state"] in change["text"]           # the earlier state stays on record


def test_curiosity_answers_the_reviewed_question(runtime):
    review, session, add = run(runtime, "curiosity_exploration", focus="community gardens")
    assert review.data["question_id"] == "q_gardens"
    assert stored(runtime, [review])[0]["question"].startswith("Why do community gardens")
    closed = runtime.store.all("SELECT * FROM open_questions WHERE status = 'answered'")
    assert closed and all(q["answer"] and q["addressed_by"] == "unit_curiosity_exploration" for q in closed)
    assert session.questions_addressed and stored(runtime, [session, add])


def test_add_open_question_writes_what_an_earlier_step_raised(runtime):
    raised = ActionResult(success=True, message="research raised a question", offline=True, data={
        "pending": {"questions": [{"question": "What makes a routine feel like one's own?", "context": "test"}]}})
    result = run_action(runtime, "self.add_open_question", template_id="open_question_review", previous=[raised])
    row = stored(runtime, [result])[0]
    assert row["status"] == "open" and row["raised_by"] == "unit_test" and row["offline"]
    again = run_action(runtime, "self.add_open_question", template_id="open_question_review", previous=[raised])
    assert again.artifacts == []                                  # the same question is not added twice


def test_research_deep_dive_without_web_search_says_so(runtime):
    llm = CountingLLM(runtime.llm)
    refresh, single, session, note = run(runtime, "research_deep_dive", llm=llm)
    assert len(stored(runtime, [refresh])) == 5                   # the five seed questions queued
    item = stored(runtime, [single])[0]
    assert item["status"] == "done"
    wiki = stored(runtime, [note])[0]
    assert NO_LIVE_SOURCE in wiki["body"] and "## " in wiki["body"]   # findings and write-up, composed
    assert not any(r.web_search for r in llm.requests)


def test_research_batch_and_open_question_review(runtime):
    refresh, batch, update = run(runtime, "research_batch")
    assert count(runtime, "SELECT count(*) FROM research_queue WHERE status = 'done'") == 3
    assert NO_LIVE_SOURCE in stored(runtime, [update])[0]["body"]
    review, single, add = run(runtime, "open_question_review")
    doc = stored(runtime, [single])
    assert any(d.get("kind") == "research_finding" for d in doc)   # no wiki step follows: a document


def test_web_search_is_requested_only_when_enabled(runtime):
    llm = CountingLLM(runtime.llm)
    settings = runtime.settings.model_copy(update={"web_search": True})
    events, session, state = run(runtime, "world_check_in", llm=llm, settings=settings)
    assert llm.requests[0].web_search and not llm.requests[1].web_search   # check_events only
    note = stored(runtime, [state])[0]
    assert note["title"].startswith("World state") and NO_LIVE_SOURCE not in note["body"]


def test_world_check_in_offline_sources(runtime):
    events, session, state = run(runtime, "world_check_in")
    assert events.data["pending"]["note"] and not events.artifacts   # handed to world.summarize_state
    assert NO_LIVE_SOURCE in stored(runtime, [state])[0]["body"]


def test_knowledge_building_links_notes_sharing_terms(runtime):
    steps = dict(template_id="knowledge_building", unit_id="unit_kb")
    session = run_action(runtime, "session.knowledge_building", **steps)
    create = run_action(runtime, "wiki.create_note", previous=[session], **steps)
    note = stored(runtime, [create])[0]
    # a note on the same subject (sharing its words) and one on another subject
    notes.add_note(runtime.store, title="Related", body=note["body"], work_unit_id="u0", offline=False, now=note["created_at"])
    notes.add_note(runtime.store, title="Sourdough", body="Starter hydration, flour, proofing temperature.",
                   work_unit_id="u0", offline=False, now=note["created_at"])
    link = run_action(runtime, "wiki.link_notes", previous=[session, create], **steps)
    related = runtime.store.one("SELECT id, links FROM wiki_notes WHERE title = 'Related'")
    assert link.data["links"] == [related["id"]]
    assert json.loads(runtime.store.scalar("SELECT links FROM wiki_notes WHERE id = ?", [note["id"]])) == [related["id"]]
    assert json.loads(related["links"]) == [note["id"]]            # both ways


def test_writing_session_becomes_a_wiki_note(runtime):
    writing, create = run(runtime, "writing_session", focus="honesty")
    assert stored(runtime, [create])[0]["title"] == writing.data["title"]


def test_creative_session_writes_its_own_insights(runtime):
    (creative,) = run(runtime, "creative_session")
    rows = stored(runtime, [creative])
    assert {r.get("kind") for r in rows} >= {"creative"}
    assert count(runtime, "SELECT count(*) FROM insights WHERE action_id = 'session.creative'") == len(creative.insights)


def test_memory_templates_summarise_title_and_consolidate(runtime):
    untitled = count(runtime, "SELECT count(*) FROM conversations WHERE title IS NULL")
    summarize, title, consolidate = run(runtime, "memory_consolidation")
    assert len(stored(runtime, [summarize])) == 56
    titled = stored(runtime, [title])
    assert len(titled) == untitled and all(c["title_generated"] for c in titled)
    assert count(runtime, "SELECT count(*) FROM conversations WHERE title IS NULL") == 0
    assert stored(runtime, [consolidate])
    again = run(runtime, "conversation_catchup")
    assert [r.artifacts for r in again] == [[], []]                # nothing new: nothing written


def test_rhythm_and_dream(runtime):
    run(runtime, "morning_reflection")
    (phase,) = run(runtime, "phase_wrapup")
    (narrative,) = run(runtime, "day_narrative")
    (dream,) = run(runtime, "nightly_dream")
    assert stored(runtime, [phase])[0]["kind"] == "phase_summary"
    assert stored(runtime, [narrative])[0]["kind"] == "daily_narrative"
    entry = stored(runtime, [dream])[0]
    assert entry["kind"] == "dream" and entry["text"] and entry["tone"]


def test_daily_journal_from_the_days_summaries(runtime):
    run(runtime, "conversation_catchup")
    (journal,) = run(runtime, "daily_journal")
    entry = stored(runtime, [journal])[0]
    assert entry["kind"] == "daily" and entry["tone"] and entry["offline"] and entry["text"]


def test_daily_journal_of_an_empty_day_writes_nothing_and_calls_nothing(runtime):
    llm = CountingLLM(runtime.llm)
    (journal,) = run_template(runtime, "daily_journal", llm=llm)
    assert journal.success and journal.artifacts == [] and llm.calls == 0
    assert count(runtime, "SELECT count(*) FROM journals") == 0


def test_system_maintenance_does_real_upkeep(runtime):
    long_ago = datetime(2026, 1, 1, 9, tzinfo=timezone.utc)
    held = budget.reserve(runtime.store, day=long_ago.date(), category="system", amount_usd=0.01,
                          settings=runtime.settings, priority="normal", phase="morning", now=long_ago)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runtime.store.execute("UPDATE reservations SET pid = ? WHERE id = ?", [dead.pid, held.id])
    old = plans.add_manual_unit(runtime.store, day=long_ago.date(), phase="morning", tag="old", now=long_ago,
                                unit=PlannedUnit("morning", "creative_session", "creative", "normal", "x", "y", 0.1))
    plans.set_unit_status(runtime.store, old, "deferred", long_ago, reason="budget")
    release, queue, health = run(runtime, "system_maintenance")
    assert stored(runtime, [release])[0]["status"] == "abandoned"
    expired = [r for r in stored(runtime, [queue]) if r.get("status")]
    assert expired[0]["id"] == old and expired[0]["status"] == "cancelled"
    report = stored(runtime, [health])[0]
    assert report["kind"] == "health_report" and "all checks passed" in report["body"]


def test_summarize_conversation_needs_a_known_focus(runtime):
    result = run_action(runtime, "memory.summarize_conversation", focus="Learning recursion")
    assert stored(runtime, [result])[0]["conversation_id"] in ("conv_001", "conv_011", "conv_021")
    with pytest.raises(ValueError, match="no conversation with id or title 'conv_999'"):
        run_action(runtime, "memory.summarize_conversation", focus="conv_999")


def test_a_failing_model_call_raises_and_writes_nothing(runtime):
    with pytest.raises(LLMError, match="provider unavailable"):
        run_action(runtime, "session.reflection", template_id="morning_reflection", llm=FailingLLM())
    with pytest.raises(LLMError):
        run_action(runtime, "memory.summarize_idle_conversations", llm=FailingLLM())
    for table in ("insights", "documents", "conversation_summaries"):
        assert count(runtime, f"SELECT count(*) FROM {table}") == 0
    assert count(runtime, "SELECT count(*) FROM conversations WHERE summarized_through_at IS NOT NULL") == 0


def test_a_writer_with_nothing_to_write_says_why(runtime):
    with pytest.raises(ValueError, match="no earlier step of unit unit_test left any note"):
        run_action(runtime, "wiki.create_note", template_id="synthesis")
    with pytest.raises(ValueError, match="wrote a wiki note to link"):
        run_action(runtime, "wiki.link_notes", template_id="knowledge_building")


def test_every_registry_action_is_covered(runtime):
    covered = TESTED_DIRECTLY | {a for t in TESTED_TEMPLATES for a in runtime.registry.templates[t].action_sequence}
    assert covered == set(runtime.registry.actions), set(runtime.registry.actions) - covered


class MeetingLLM(CountingLLM):
    """The offline client, holding each call until `parties` calls are in flight at once (so units that
    run side by side overlap at their first call, as they do at API latency)."""

    def __init__(self, inner, parties: int):
        import threading
        super().__init__(inner)
        self.meet = threading.Barrier(parties, timeout=10)

    def structured(self, request, schema):
        import threading
        try:
            self.meet.wait()
        except threading.BrokenBarrierError:   # once aborted, calls pass straight through
            pass
        return super().structured(request, schema)


@pytest.mark.parametrize(("action_id", "asked"), [("research.run_batch", "QUOTED the question"),
                                                  ("memory.generate_conversation_title", "QUOTED conversation")])
def test_units_side_by_side_never_take_the_same_item(runtime, action_id, asked):
    """Two units of a phase (threads) picking from the research queue, or from the untitled
    conversations, at the same moment: each item is paid for by one of them only; what one finished
    is not taken again by a third."""
    from concurrent.futures import ThreadPoolExecutor

    run_action(runtime, "research.refresh_queue")
    runtime.store.execute("UPDATE conversations SET title = NULL")
    llm = MeetingLLM(runtime.llm, parties=2)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda unit: run_action(runtime, action_id, llm=llm, unit_id=unit), ["u1", "u2"]))
    llm.meet.abort()
    assert all(r.success for r in results), [r.message for r in results]
    quoted = [r.prompt.split(asked, 1)[1][:80] for r in llm.requests]
    assert len(quoted) >= 4 and len(set(quoted)) == len(quoted)   # no question or conversation asked twice
    taken = {a.id for r in results for a in r.artifacts}
    third = run_action(runtime, action_id, llm=llm, unit_id="u3")
    assert not taken & {a.id for a in third.artifacts}
    assert count(runtime, "SELECT count(*) FROM claims WHERE state = 'held'") == 0


def test_titles_made_before_an_outage_are_kept_and_the_rest_titled_later(runtime):
    """A provider outage on the third title call stops the action; the two titles already paid for are
    written, and the conversations not titled are free for the next run (not claimed as done)."""
    class OutageOnThird(CountingLLM):
        def structured(self, request, schema):
            if self.calls == 2:
                self.requests.append(request)
                raise LLMError("provider unavailable (test)", status=529, retryable=True)
            return super().structured(request, schema)

    runtime.store.execute("UPDATE conversations SET title = NULL")
    with pytest.raises(LLMError):
        run_action(runtime, "memory.generate_conversation_title", llm=OutageOnThird(runtime.llm), unit_id="u1")
    assert count(runtime, "SELECT count(*) FROM conversations WHERE title IS NOT NULL") == 2
    later = run_action(runtime, "memory.generate_conversation_title", unit_id="u2")
    assert len(later.artifacts) == 10   # the third conversation among them: its claim was given back
    assert count(runtime, "SELECT count(*) FROM claims WHERE state = 'held'") == 0


class AnswersThen(CountingLLM):
    """The real offline client for the first `ok` calls, then `exc` (a refusal, an outage)."""

    def __init__(self, inner, ok: int, exc: Exception):
        super().__init__(inner)
        self.ok, self.exc = ok, exc

    def structured(self, request, schema):
        if self.calls >= self.ok:
            self.requests.append(request)
            raise self.exc
        return super().structured(request, schema)


@pytest.mark.parametrize("exc", [BudgetRefused("day budget exhausted", "day"),
                                 LLMError("provider unavailable (test)", status=529, retryable=True)],
                         ids=["refused", "outage"])
def test_a_research_batch_stopped_after_one_answer_keeps_that_answers_write_up(runtime, exc):
    """research_batch = refresh_queue -> run_batch -> wiki.update_note. The first question is answered (paid,
    marked done), the second refused or failed: the unit stops before wiki.update_note, so the answered
    question's write-up is written now, as a research finding, not left in a result no step will read."""
    refresh = run_action(runtime, "research.refresh_queue", template_id="research_batch", unit_id="u_rb")
    assert refresh.data["queued"] >= 2
    docs_before = count(runtime, "SELECT count(*) FROM documents WHERE kind = 'research_finding'")
    with pytest.raises(type(exc)):
        run_action(runtime, "research.run_batch", template_id="research_batch", unit_id="u_rb",
                   previous=[refresh], llm=AnswersThen(runtime.llm, ok=1, exc=exc))
    [done] = runtime.store.all("SELECT question FROM research_queue WHERE status = 'done'")
    [doc] = runtime.store.all("SELECT title FROM documents WHERE kind = 'research_finding' AND work_unit_id = 'u_rb'")
    assert doc["title"] == done["question"][:120]
    assert count(runtime, "SELECT count(*) FROM documents WHERE kind = 'research_finding'") == docs_before + 1


def _unit(rt, template: str, tag: str, focus: str = "what I keep wondering", origin=UnitOrigin.JOB):
    now = sample_now(rt)
    return job_unit(rt, now.date(), "morning", template, tag, focus, now, origin=origin), FixedClock(now)


def _fail_once(monkeypatch, rt, action_id: str, why: str = "IOException: could not set lock on file (test)"):
    """The action's handler fails; monkeypatch.undo() brings the real one back."""
    module_name, _, name = rt.registry.actions[action_id].handler.partition(":")

    def failing(ctx):
        raise RuntimeError(why)
    monkeypatch.setattr(importlib.import_module(module_name), name, failing)


def _retry(rt, uid, clock, positions):
    """A dlq retry: the failed unit reopened, its steps from the failed one run again."""
    plans.reopen_failed(rt.store, uid, "retried", clock.now())
    return [run_step(rt, uid, p, clock) for p in positions]


def _notes(rt, uid):
    return rt.store.all("SELECT id, title, body FROM wiki_notes WHERE work_unit_id = ? ORDER BY created_at", [uid])


def _finding_notes(rt, uid: str, finding: str) -> int:
    """The unit's wiki notes holding `finding` (a researched question's write-up)."""
    return sum(finding in n["body"] for n in rt.store.all("SELECT body FROM wiki_notes WHERE work_unit_id = ?", [uid]))


def test_a_unit_failing_after_its_research_keeps_the_finding_once_and_a_retry_does_not_repeat_it(runtime,
                                                                                                  monkeypatch):
    """research_deep_dive = refresh_queue -> run_single -> session.research -> wiki.create_note. run_single
    answers a question (paid, marked done) and leaves its write-up for wiki.create_note. When
    session.research fails, the unit ends there: the write-up is kept now, as the wiki note the owner
    would have written, and marked kept, so a retry of the unit (dlq retry) writes it no second time and
    the session's piece of the retry goes on in that note, one note as in a run that never failed."""
    rt = runtime
    uid, clock = _unit(rt, "research_deep_dive", "dd_fail")
    assert run_step(rt, uid, 0, clock).status == "completed"
    assert run_step(rt, uid, 1, clock).status == "completed"
    single = ActionResult.model_validate(plans.action_runs(rt.store, uid)[1]["result"])
    [pending] = single.data["pending"]["note"]
    _fail_once(monkeypatch, rt, "session.research", "ValueError: session.research: the model returned an empty piece")
    failed = run_step(rt, uid, 2, clock)
    assert failed.status == "failed" and "kept 1 record(s) of note left for later steps" in failed.message
    assert _finding_notes(rt, uid, pending["body"]) == 1
    [note] = _notes(rt, uid)
    stored_single = plans.action_runs(rt.store, uid)[1]["result"]
    assert "note" not in stored_single["data"]["pending"] and stored_single["data"]["kept"] == {"note": [note["id"]]}
    assert note["id"] in [a["id"] for a in stored_single["artifacts"]]

    monkeypatch.undo()   # a dlq retry: the unit runs again from the failed step, the real session this time
    assert [o.status for o in _retry(rt, uid, clock, [2, 3])] == ["completed", "completed"]
    assert _finding_notes(rt, uid, pending["body"]) == 1
    [extended] = _notes(rt, uid)   # the session's piece went on in the kept note
    assert extended["id"] == note["id"] and len(extended["body"]) > len(note["body"])


def test_a_kind_that_cannot_be_kept_stays_pending_and_the_others_are_kept(runtime):
    """What a unit that ends early left is kept kind by kind, by the step of its template that owns the
    kind: an observation naming a growth edge that is gone cannot be written, so it stays pending (a retry
    still has it); the growth edge's new state is kept, and what was written joins the producer's artifacts."""
    from cass_pipelines.store import persona

    rt = runtime
    edge = persona.growth_edges(rt.store)[0]["id"]
    made = ActionResult(success=True, message="a session", data={"pending": {
        "observations": [{"edge_id": "edge_gone", "text": "it moved"}],
        "edge_state": [{"edge_id": edge, "current_state": "steadier than last week"}]}})
    results = {0: made}
    ctx = context(rt, "session.growth_edge", template_id="growth_edge_work", unit_id="u_keep")
    done, failed = keep_left_over(ctx, results)
    assert done == ["2 record(s) of edge_state"] and len(failed) == 1 and "edge_gone" in failed[0], (done, failed)
    assert persona.growth_edges(rt.store)[0]["current_state"] == "steadier than last week"
    assert results[0].data["pending"] == {"observations": made.data["pending"]["observations"]}
    assert list(results[0].data["kept"]) == ["edge_state"]
    assert [a.type for a in results[0].artifacts] == ["growth_edge", "observation"]


def test_world_check_in_keeps_the_events_as_summarize_state_would(runtime, monkeypatch):
    """world_check_in = world.check_events -> session.world_state -> world.summarize_state. check_events leaves
    its events for summarize_state, which writes them as a 'World state DATE' note. When session.world_state
    fails (e.g. 'the model returned an empty piece'), the events are kept: they should be kept as the owner
    would write them, not as a raw 'Events gathered' wiki note."""
    rt = runtime
    uid, clock = _unit(rt, "world_check_in", "wc_fail")
    assert run_step(rt, uid, 0, clock).status == "completed"
    _fail_once(monkeypatch, rt, "session.world_state", "ValueError: session.world_state: the model returned an empty piece")
    failed = run_step(rt, uid, 1, clock)
    assert failed.status == "failed" and "kept 1 record(s) of note" in failed.message
    titles = [n["title"] for n in _notes(rt, uid)]
    assert titles and all(t.startswith("World state") for t in titles), titles


def test_research_batch_owner_failing_keeps_findings_in_the_focus_note(runtime, monkeypatch):
    """research_batch = refresh_queue -> run_batch -> wiki.update_note, whose job is to append the findings to
    the note the focus names. If update_note fails once, the findings are kept as update_note writes them (in
    the focus note, not as a new note), and the dlq retry's update_note writes them no second time."""
    rt = runtime
    now = sample_now(rt)
    nid = notes.add_note(rt.store, title="curiosity budgeting and attention", body="What I know so far.",
                         work_unit_id="earlier", offline=True, now=now)
    focus_note = notes.note(rt.store, nid)
    uid, clock = _unit(rt, "research_batch", "rb_fail", focus=focus_note["title"], origin=UnitOrigin.MANUAL)
    assert [run_step(rt, uid, p, clock).status for p in (0, 1)] == ["completed", "completed"]
    made = ActionResult.model_validate(plans.action_runs(rt.store, uid)[1]["result"])
    finding = made.data["pending"]["note"][0]["body"]
    _fail_once(monkeypatch, rt, "wiki.update_note")
    assert run_step(rt, uid, 2, clock).status == "failed"
    monkeypatch.undo()
    assert [o.status for o in _retry(rt, uid, clock, [2])] == ["completed"]
    assert finding[:200] in notes.note(rt.store, focus_note["id"])["body"], \
        f"the focus note lacks the finding; notes of the unit: {[n['title'] for n in _notes(rt, uid)]}"


def test_knowledge_building_retry_after_create_note_failed_can_link_the_kept_note(runtime, monkeypatch):
    """knowledge_building = session.knowledge_building -> wiki.create_note -> wiki.link_notes. create_note fails
    once; its note is kept (no artifact recorded anywhere); on the dlq retry create_note says 'kept' with no
    artifact and link_notes finds no wiki note: the unit can never complete."""
    rt = runtime
    uid, clock = _unit(rt, "knowledge_building", "kb_fail")
    assert run_step(rt, uid, 0, clock).status == "completed"
    _fail_once(monkeypatch, rt, "wiki.create_note")
    failed = run_step(rt, uid, 1, clock)
    assert failed.status == "failed" and "kept 1 record(s) of note" in failed.message
    monkeypatch.undo()
    outcomes = _retry(rt, uid, clock, [1, 2])
    assert [o.status for o in outcomes] == ["completed", "completed"], [o.message for o in outcomes]


def test_the_work_summary_of_a_unit_that_kept_a_note_names_it(runtime, monkeypatch):
    """research_deep_dive failing at session.research keeps run_single's write-up as a wiki note; the unit's
    work summary (built from the action results' artifacts) should name it among what the unit made."""
    rt = runtime
    uid, clock = _unit(rt, "research_deep_dive", "dd_sum")
    assert [run_step(rt, uid, p, clock).status for p in (0, 1)] == ["completed", "completed"]
    _fail_once(monkeypatch, rt, "session.research")
    assert run_step(rt, uid, 2, clock).status == "failed"
    [kept_note] = _notes(rt, uid)
    summary = summarize(rt, plans.get_unit(rt.store, uid), clock)
    artifacts = summary["artifacts"]
    artifacts = json.loads(artifacts) if isinstance(artifacts, str) else artifacts
    assert kept_note["id"] in json.dumps(artifacts, default=str), artifacts


def test_kept_titles_message_counts_only_titles_written(runtime, monkeypatch):
    """conversation_catchup = memory.summarize_idle_conversations -> memory.generate_conversation_title. The
    title step writes the proposed titles first, then an outage on its own calls fails it; keep_left_over
    writes the same titles again (set_titles: none written) yet records 'kept N titles'."""
    rt = runtime
    rt.store.execute("UPDATE conversations SET title = NULL")
    uid, clock = _unit(rt, "conversation_catchup", "cc_fail")
    assert run_step(rt, uid, 0, clock).status == "completed"
    proposed = ActionResult.model_validate(plans.action_runs(rt.store, uid)[0]["result"]).data["pending"]["titles"]
    assert proposed
    mem = importlib.import_module("cass_pipelines.services.handlers.memory")
    real = mem.generate_conversation_title

    def title_then_outage(ctx):
        real(ctx)   # the proposed titles (and some of its own) are written
        raise RuntimeError("LLMError: provider unavailable (test)")
    monkeypatch.setattr(mem, "generate_conversation_title", title_then_outage)
    failed = run_step(rt, uid, 1, clock)
    assert "kept" not in failed.message, failed.message
