"""Work summaries: built from the unit's actual results by one fast call, stored once, shown as markdown."""
from __future__ import annotations

import json

from handlers_kit import CountingLLM, run_template, sample_now

from cass_pipelines.domain.phases import phase_at
from cass_pipelines.domain.plan_rules import PlannedUnit
from cass_pipelines.services.handlers.base import ARTIFACT_TABLES
from cass_pipelines.services.handlers.calls import system_prefix
from cass_pipelines.services.summaries import summarize_unit, summary_markdown
from cass_pipelines.store import plans


def make_unit(rt, template_id: str, status: str, error: str | None = None) -> dict:
    now = sample_now(rt)
    day, phase = phase_at(now, rt.settings)
    t = rt.registry.templates[template_id]
    uid = plans.add_manual_unit(rt.store, day=day, phase=phase, tag=template_id, now=now, unit=PlannedUnit(
        phase, t.id, t.category, t.priority, "what I keep noticing", "it matters to me", 0.1))
    plans.set_unit_status(rt.store, uid, status, now, error=error)
    return plans.get_unit(rt.store, uid)


def summarize(rt, llm, unit, results):
    return summarize_unit(rt.store, llm, rt.settings, rt.registry, unit, results, sample_now(rt))


def test_completed_unit_summary_from_its_results(runtime):
    unit = make_unit(runtime, "morning_reflection", "completed")
    results = run_template(runtime, "morning_reflection", unit_id=unit["id"])
    llm = CountingLLM(runtime.llm)
    row = summarize(runtime, llm, unit, results)
    (request,) = llm.requests
    assert request.tier == "fast" and request.purpose == "summary.work_unit"
    assert request.system_prefix == system_prefix(runtime.store, runtime.registry, llm, "fast")   # cached prefix
    assert all(r.message in request.prompt for r in results)            # it saw what the steps reported
    stored = runtime.store.one("SELECT * FROM work_summaries WHERE work_unit_id = ?", [unit["id"]])
    assert stored["status"] == "completed" and stored["narrative"] and stored["offline"]
    assert json.loads(stored["key_insights"]) == row["key_insights"] and row["key_insights"]
    artifacts = json.loads(stored["artifacts"])
    assert {a["id"] for a in artifacts} == {a.id for r in results for a in r.artifacts}
    assert all(a["location"] == f"{ARTIFACT_TABLES[a['type']]}/{a['id']}" for a in artifacts)
    assert {"insight", "document"} <= {a["type"] for a in artifacts}
    assert stored["cost_usd"] > sum(r.cost_usd for r in results) > 0      # the steps plus this summary call


def test_a_summarised_unit_is_not_summarised_again(runtime):
    unit = make_unit(runtime, "creative_session", "completed")
    results = run_template(runtime, "creative_session", unit_id=unit["id"])
    llm = CountingLLM(runtime.llm)
    first = summarize(runtime, llm, unit, results)
    again = summarize(runtime, llm, unit, results)
    assert llm.calls == 1 and again["narrative"] == first["narrative"]
    assert runtime.store.scalar("SELECT count(*) FROM work_summaries") == 1


def test_failed_unit_is_described_without_a_call(runtime):
    unit = make_unit(runtime, "synthesis", "failed", error="wiki.create_note: ValueError: no note")
    results = run_template(runtime, "synthesis", unit_id=unit["id"])[:2]
    llm = CountingLLM(runtime.llm)
    row = summarize(runtime, llm, unit, results)
    assert llm.calls == 0 and row["status"] == "failed"
    assert "wiki.create_note: ValueError: no note" in row["narrative"] and "session.synthesis:" in row["narrative"]
    assert row["key_insights"] == results[0].insights                   # what it did find is kept


def test_summary_markdown_shows_where_artifacts_live(runtime):
    unit = make_unit(runtime, "growth_edge_work", "completed")
    results = run_template(runtime, "growth_edge_work", unit_id=unit["id"])
    md = summary_markdown(summarize(runtime, runtime.llm, unit, results))
    assert md.startswith("### growth_edge_work — completed") and "**Key insights**" in md
    assert "`growth_observations/obs_" in md and "`growth_edges/edge_" in md and "(offline" in md


def test_journal_reads_the_days_work_summaries(runtime):
    unit = make_unit(runtime, "morning_reflection", "completed")
    summary = summarize(runtime, runtime.llm, unit, run_template(runtime, "morning_reflection", unit_id=unit["id"]))
    llm = CountingLLM(runtime.llm)
    (journal,) = run_template(runtime, "daily_journal", llm=llm)
    assert summary["narrative"] in llm.requests[0].prompt
    assert runtime.store.one("SELECT * FROM journals WHERE kind = 'daily'")["work_unit_id"] == "unit_daily_journal"


def test_a_unit_that_found_nothing_to_do_is_described_without_a_call(runtime):
    """A catch-up with no conversation waiting made no call and wrote nothing: its account is its steps'
    own messages, not a paid summary of nothing."""
    run_template(runtime, "conversation_catchup")                 # the sample's conversations, summarised
    unit = make_unit(runtime, "conversation_catchup", "completed")
    results = run_template(runtime, "conversation_catchup", unit_id=unit["id"])
    assert not any(r.artifacts or r.insights or r.cost_usd for r in results)
    llm = CountingLLM(runtime.llm)
    row = summarize(runtime, llm, unit, results)
    assert llm.calls == 0 and row["status"] == "completed" and row["cost_usd"] == 0
    assert all(r.message in row["narrative"] for r in results) and row["key_insights"]
