"""The agent's day through Dagster: plan, fan-out, summaries, costs, journal — offline, on a real
DuckDB file and a real Dagster instance."""
import json
from datetime import timedelta

import dagster as dg
import pytest
from support import NOW, SAMPLE_DAY, seed_plan

from cass_pipelines.cli.main import main
from cass_pipelines.definitions import build_defs
from cass_pipelines.domain.goals import week_start
from cass_pipelines.domain.plan_rules import PlanInputs
from cass_pipelines.execution import instance_for, run_journal, run_phase
from cass_pipelines.llm.base import LLMError
from cass_pipelines.services.decision import DecisionContext, decide
from cass_pipelines.services.runtime import open_runtime
from cass_pipelines.store import plans

DAY = SAMPLE_DAY


@pytest.fixture
def day_env(sample_home):
    rt = open_runtime()
    return rt, instance_for(rt.settings), build_defs(rt.settings, rt.registry)


def test_run_day_cli_runs_every_phase_and_reports(sample_home, capsys):
    assert main(["run-day", "--date", DAY.isoformat(), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["phase"] for r in report["runs"]] == ["memory", "intention", "morning", "afternoon", "evening", "night",
                                                    "journal"]
    assert report["runs"][1]["week"] == week_start(DAY).isoformat()   # the week is planned before the morning
    assert all(r["success"] for r in report["runs"])
    plan = report["plan"]
    assert plan["source"] == "llm" and plan["day_intention"]
    units = [u for us in plan["phases"].values() for u in us]
    # (gated work the agent chose waits for a person)
    assert units and all(u["status"] in ("completed", "deferred", "skipped", "cancelled", "awaiting_approval")
                         for u in units)
    assert report["journal"]["text"] and report["journal"]["offline"] is True
    assert report["budget"]["spent_usd"] > 0
    rt = open_runtime()
    ledger = rt.store.all("SELECT offline, cost_usd FROM llm_ledger")
    assert ledger and all(r["offline"] for r in ledger)
    # What the day leaves behind, drawn from the agent's real data.
    count = rt.store.scalar
    assert count("SELECT count(DISTINCT conversation_id) FROM conversation_summaries") == \
        count("SELECT count(*) FROM conversations")                    # every idle sample conversation
    # The day changed the agent's self-model, and every artifact an action reports exists in its table.
    tables = {"insight": "insights", "observation": "growth_observations", "open_question": "open_questions",
              "wiki_note": "wiki_notes", "document": "documents"}
    reported = [(a["type"], a["id"]) for r in rt.store.all("SELECT result FROM action_runs WHERE status = 'completed'")
                for a in json.loads(r["result"] or "{}").get("artifacts", []) if a["type"] in tables]
    assert {"insight", "observation"} & {kind for kind, _ in reported}, reported
    for kind, artifact_id in reported:
        assert count(f"SELECT count(*) FROM {tables[kind]} WHERE id = ?", [artifact_id]) == 1, (kind, artifact_id)
    completed = {u["work_unit_id"] for us in plan["phases"].values() for u in us
                 if u["status"] == "completed" and u["origin"] != "job"}
    summaries = {r["work_unit_id"]: r for r in rt.store.all("SELECT * FROM work_summaries")}
    assert completed and completed <= set(summaries)
    assert all(json.loads(summaries[u]["key_insights"]) for u in completed)
    # The runs are in the Dagster instance, so the UI shows them afterwards.
    instance = dg.DagsterInstance.get()
    every_phase = {f"{DAY}|{p}" for p in ("morning", "afternoon", "evening", "night")}
    for asset in ("phase_plan", "phase_work", "work_summaries", "cost_records"):
        assert every_phase <= set(instance.get_materialized_partitions(dg.AssetKey(asset))), asset


def test_rematerialising_a_plan_keeps_it_and_replan_makes_a_revision(day_env):
    rt, instance, defs = day_env
    assert run_phase(defs, instance, DAY, "morning").success
    first = plans.units_for_day(rt.store, DAY)
    assert run_phase(defs, instance, DAY, "morning").success
    assert plans.day_plan_revisions(rt.store, DAY) == 1
    assert [u["id"] for u in plans.units_for_day(rt.store, DAY)] == [u["id"] for u in first]
    assert run_phase(defs, instance, DAY, "afternoon", replan=True).success
    assert plans.day_plan_revisions(rt.store, DAY) == 2
    events = instance.fetch_materializations(dg.AssetKey("phase_plan"), limit=10).records
    revisions = sorted(e.asset_materialization.metadata["revision"].value for e in events)
    assert revisions == [1, 1, 2]
    # The replaced, never-started units of later phases are cancelled, with the reason kept.
    cancelled = [u for u in plans.units_for_day(rt.store, DAY) if u["status"] == "cancelled"]
    assert all("replaced by plan revision 2" in u["reason"] for u in cancelled)


def test_a_late_start_plans_only_the_remaining_phases(day_env):
    rt, instance, defs = day_env
    assert run_phase(defs, instance, DAY, "afternoon").success
    plan = plans.latest_day_plan(rt.store, DAY)
    assert plan["planned_from_phase"] == "afternoon"
    assert set(plan["plan"]) == {"afternoon", "evening", "night"}
    assert not plans.units_for_phase(rt.store, DAY, "morning")


def test_actions_of_a_unit_run_in_template_order_one_step_each(day_env):
    rt, instance, defs = day_env
    result = run_phase(defs, instance, DAY, "morning")
    assert result.success
    steps = [e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"]
    for unit in plans.units_for_phase(rt.store, DAY, "morning"):
        sequence = rt.registry.templates[unit["template_id"]].action_sequence
        runs = plans.action_runs(rt.store, unit["id"])
        assert [r["action_id"] for r in runs] == list(sequence[:len(runs)])
        mine = [s for s in steps if f"[{unit['id']}__" in s]
        # phase_work_graph.action_K_of_N[UNIT__TEMPLATE]: the unit's K-th action of N, one step each
        assert [int(s.split(".action_")[1].split("_of_")[0]) for s in mine] == list(range(1, len(mine) + 1))
        assert all(s.endswith(f"[{unit['id']}__{unit['template_id']}]") for s in mine)
        started = [r["started_at"] for r in runs]
        assert started == sorted(started)


def test_a_failing_action_fails_its_unit_but_the_phase_is_summarised_and_costed(day_env, monkeypatch):
    rt, instance, defs = day_env
    import cass_pipelines.services.handlers.sessions as sessions

    def boom(ctx):
        raise RuntimeError("simulated handler crash")

    monkeypatch.setattr(sessions, "reflection", boom)
    seed_plan(rt, DAY, "morning", ["morning_reflection", "growth_edge_work"])
    result = run_phase(defs, instance, DAY, "morning")
    assert result.success
    units = {u["template_id"]: u for u in plans.units_for_phase(rt.store, DAY, "morning")}
    failed = units["morning_reflection"]
    assert failed["status"] == "failed" and "simulated handler crash" in failed["error"]
    # The rest of its sequence did not run; the other unit ran all of its actions.
    assert [r["status"] for r in plans.action_runs(rt.store, failed["id"])] == ["failed"]
    assert units["growth_edge_work"]["status"] == "completed"
    summarised = {r["work_unit_id"]: r["status"] for r in rt.store.all("SELECT * FROM work_summaries")}
    assert summarised == {failed["id"]: "failed", units["growth_edge_work"]["id"]: "completed"}
    checks = [e.event_specific_data for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert next(c for c in checks if c.check_name == "actions_succeeded").passed is False
    assert rt.store.scalar("SELECT count(*) FROM dead_letters WHERE work_unit_id = ?", [failed["id"]]) == 1
    assert f"{DAY}|morning" in instance.get_materialized_partitions(dg.AssetKey("cost_records"))


def test_backfill_of_three_past_dates_makes_three_plans(day_env):
    rt, instance, defs = day_env
    job = defs.resolve_job_def("phase_job")
    days = [DAY - timedelta(days=n) for n in (3, 2, 1)]
    with dg.partition_loading_context(effective_dt=NOW):   # (Dagster's own "now" is the machine's clock)
        keys = set(job.partitions_def.get_partition_keys())
        for d in days:
            assert f"{d}|morning" in keys
            assert job.execute_in_process(instance=instance, partition_key=f"{d}|morning").success
    assert [plans.latest_day_plan(rt.store, d)["revision"] for d in days] == [1, 1, 1]
    assert rt.store.scalar("SELECT count(DISTINCT date) FROM day_plans") == 3


def test_journal_job_writes_the_day_once(day_env):
    rt, instance, defs = day_env
    assert run_phase(defs, instance, DAY, "night").success
    assert run_journal(defs, instance, DAY).success
    first = rt.store.one("SELECT text, created_at FROM journals WHERE date = ? AND kind = 'daily'", [DAY])
    calls = rt.store.scalar("SELECT count(*) FROM llm_ledger")
    assert run_journal(defs, instance, DAY).success   # a re-run resumes the same unit: nothing new
    assert rt.store.scalar("SELECT count(*) FROM llm_ledger") == calls
    assert rt.store.one("SELECT text, created_at FROM journals WHERE date = ? AND kind = 'daily'", [DAY]) == first


class Failing:
    mode = "anthropic"

    def model_for(self, tier):
        return "claude-sonnet-5-5"

    def text(self, request):
        raise LLMError("overloaded", status=529, retryable=True)

    structured = lambda self, request, schema: self.text(request)  # noqa: E731


def test_planning_falls_back_when_the_llm_fails(runtime):
    inputs = PlanInputs(registry=runtime.registry, phases=["morning", "afternoon"],
                        category_remaining={c: 1.0 for c in ("system", "journal", "memory", "research",
                                                              "reflection", "growth", "curiosity", "creative")})
    ctx = DecisionContext(day=DAY, phases=inputs.phases, growth_edges=[], open_questions=[], recent_work=[],
                          journal_tone=None, idle=True, last_activity=None, deferred=[],
                          budget={"remaining_usd": 4.5, "daily_limit_usd": 5.0, "reserve_usd": 0.5,
                                  "categories": {}}, degraded=False, inputs=inputs)
    decision = decide(Failing(), {"deep": "prefix", "fast": "prefix"}, ctx)
    assert decision.source == "fallback"
    assert "overloaded" in decision.error
    assert decision.units["morning"] and decision.units["afternoon"]


def test_a_secret_in_a_handler_error_never_reaches_the_store(day_env, monkeypatch):
    rt, instance, defs = day_env
    import cass_pipelines.services.handlers.sessions as sessions

    secret = "sk-ant-test-0123456789abcdef"
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)   # the LLM stays offline (CASS_LLM=offline)

    def leaky(ctx):
        raise RuntimeError(f"request failed with key {secret}")

    monkeypatch.setattr(sessions, "reflection", leaky)
    seed_plan(rt, DAY, "morning", ["morning_reflection"])
    assert run_phase(defs, instance, DAY, "morning").success
    stored = " ".join(str(v) for t in ("work_units", "action_runs", "dead_letters")
                      for row in rt.store.all(f"SELECT * FROM {t}") for v in row.values())
    assert "request failed with key [redacted]" in stored and secret not in stored
