"""Plan validation drops each rule violation and defers what cannot run now, each with its reason;
the fallback scorer is deterministic."""
import pytest

from cass_pipelines.config.registry import load_registry
from cass_pipelines.domain.plan_rules import PlanInputs, ProposedUnit, fallback_plan, score_template, validate_plan

REGISTRY = load_registry()
PLENTY = {c: 10.0 for c in ("system", "journal", "memory", "research", "reflection", "growth", "curiosity",
                            "creative")}
MEASURED = frozenset(REGISTRY.actions)   # every action's cost known from the ledger


def inputs(**kw) -> PlanInputs:
    base = dict(registry=REGISTRY, phases=["morning", "afternoon", "evening", "night"],
                category_remaining=dict(PLENTY), growth_edges=["Expressing uncertainty"],
                open_questions=["What makes an explanation feel finished?"], measured=MEASURED)
    base.update(kw)
    return PlanInputs(**base)


def unit(template_id: str) -> ProposedUnit:
    return ProposedUnit(template_id=template_id, focus="f", motivation="m")


def reasons(dropped) -> list[str]:
    return [d.reason for d in dropped]


def test_valid_plan_is_kept_in_order_with_estimates():
    kept, dropped, deferred = validate_plan({"morning": [unit("morning_reflection"), unit("growth_edge_work")]},
                                            inputs())
    assert dropped == [] and deferred == []
    assert [u.template_id for u in kept["morning"]] == ["morning_reflection", "growth_edge_work"]
    # A unit's estimate is its actions plus the work-summary call that follows it.
    assert kept["morning"][1].estimated_cost_usd == inputs().cost("growth_edge_work")
    assert inputs().cost("growth_edge_work") > REGISTRY.template_cost("growth_edge_work") > 0


@pytest.mark.parametrize("proposed, kw, expected", [
    ({"morning": [unit("teleport")]}, {}, "unknown template 'teleport'"),
    ({"morning": [unit("nightly_dream")]}, {}, "template not allowed in morning"),
    ({"night": [unit("daily_journal")]}, {}, "run by its own job"),
    ({"morning": [unit("growth_edge_work"), unit("growth_edge_work")]}, {}, "same template as the unit before it"),
])
def test_each_rule_violation_is_dropped_with_its_reason(proposed, kw, expected):
    kept, dropped, deferred = validate_plan(proposed, inputs(**kw))
    assert len(dropped) == 1 and not deferred, dropped
    assert expected in dropped[0].reason
    phase = next(iter(proposed))
    assert dropped[0].phase == phase


@pytest.mark.parametrize("proposed, kw, expected", [
    ({"morning": [unit("conversation_catchup")]}, {"idle": False}, "requires idle"),
    ({"morning": [unit("research_deep_dive")]}, {"category_remaining": {**PLENTY, "research": 0.01}},
     "over budget: category research has $0.0100 left"),
    ({"morning": [unit("research_deep_dive")]}, {"largest_call": {"research_deep_dive": 11.0}},
     "over budget: category research has $10.0000 left, its dearest call reserves $11.0000"),
    ({"night": [unit("nightly_dream")]}, {"skip_priorities": frozenset({"idle", "low"})},
     "budget running low: idle-priority work skipped"),
    ({"morning": [unit("morning_reflection"), unit("growth_edge_work")]}, {"max_units_per_phase": 1},
     "morning already has 1 units"),
])
def test_work_that_cannot_run_now_is_deferred_not_dropped(proposed, kw, expected):
    kept, dropped, deferred = validate_plan(proposed, inputs(**kw))
    assert len(deferred) == 1 and not dropped, deferred
    assert expected in deferred[0].reason
    phase = next(iter(proposed))
    assert deferred[0].unit.phase == phase and deferred[0].unit.template_id == proposed[phase][-1].template_id


def test_a_unit_never_measured_is_admitted_when_its_dearest_call_fits():
    """Its estimate is a guess: the dearest call decides. Once measured, the whole estimate must fit."""
    cost = inputs().cost("curiosity_exploration")
    room = {**PLENTY, "curiosity": cost / 2}
    call = {"curiosity_exploration": cost / 3}
    unmeasured = inputs(category_remaining=room, largest_call=call, measured=frozenset())
    assert unmeasured.unaffordable("curiosity_exploration", "curiosity", cost / 2) is None
    kept, _, deferred = validate_plan({"morning": [unit("curiosity_exploration")]}, unmeasured)
    assert [u.template_id for u in kept["morning"]] == ["curiosity_exploration"] and not deferred
    # ... but not when even that call does not fit
    assert "its dearest call reserves" in unmeasured.unaffordable("curiosity_exploration", "curiosity", cost / 4)
    measured = inputs(category_remaining=room, largest_call=call)
    assert "unit needs" in measured.unaffordable("curiosity_exploration", "curiosity", cost / 2)


def test_budget_is_consumed_in_plan_order_across_phases():
    one_unit = REGISTRY.template_cost("research_deep_dive")
    kept, dropped, deferred = validate_plan(
        {"morning": [unit("research_deep_dive")], "afternoon": [unit("synthesis"), unit("research_deep_dive")]},
        inputs(category_remaining={**PLENTY, "research": one_unit * 1.5}))
    assert len(kept["morning"]) == 1 and [u.template_id for u in kept["afternoon"]] == ["synthesis"]
    assert not dropped and deferred[0].unit.phase == "afternoon" and "over budget" in deferred[0].reason


def test_repeat_check_spans_the_previous_unit_of_yesterday():
    _, dropped, _ = validate_plan({"morning": [unit("morning_reflection")]}, inputs(),
                                  previous_template="morning_reflection")
    assert "same template" in dropped[0].reason


def test_fallback_plan_is_deterministic_valid_and_varied():
    a, intention_a = fallback_plan(inputs())
    b, intention_b = fallback_plan(inputs())
    assert a == b and intention_a == intention_b
    kept, dropped, deferred = validate_plan(a, inputs())
    assert dropped == [] and deferred == []
    chosen = [u.template_id for p in kept.values() for u in p]
    assert len(chosen) >= 6 and len(set(chosen)) >= 5
    for phase, units in kept.items():
        for u in units:
            assert phase in REGISTRY.templates[u.template_id].preferred_phases


def test_fallback_respects_idle_and_degradation():
    plan, _ = fallback_plan(inputs(idle=False, skip_priorities=frozenset({"low", "idle"})))
    for units in plan.values():
        for u in units:
            t = REGISTRY.templates[u.template_id]
            assert not t.requires_idle and t.priority not in ("low", "idle")


def test_scorer_prefers_variety():
    fresh = score_template("growth_edge_work", "morning", inputs(), recent=[])
    repeated = score_template("growth_edge_work", "morning", inputs(), recent=["growth_edge_work"] * 3)
    assert fresh > repeated


def planned(uid: str, template_id: str, **kw) -> dict:
    t = REGISTRY.templates[template_id]
    return {"id": uid, "template_id": template_id, "category": t.category, "focus": "f", "status": "planned",
            "origin": "plan", "started_at": None, "reoffered_as": None, "defer_kind": None, "reason": None, **kw}


def test_a_phase_opening_is_decided_from_its_snapshot_with_a_kind_for_every_deferral():
    """Pure: pause, the phase's unit limit and money each defer with their own kind; deferred work of an
    earlier day is offered again while there is room, in priority order (high before normal)."""
    from datetime import date

    from cass_pipelines.domain.phase_offer import PhaseSnapshot, offer_phase
    from cass_pipelines.domain.states import DeferKind

    own = [planned("a", "morning_reflection"), planned("b", "curiosity_exploration"),
           planned("c", "research_deep_dive")]
    earlier = [planned("old", "growth_edge_work", status="deferred", reason="budget: no room")]

    def offer(max_units: int, room: float):
        snapshot = PhaseSnapshot(day=date(2026, 11, 20), phase="morning", own=own, waiting=earlier,
                                 paused={"reflection": "quiet week"}, idle=True, max_units=max_units)
        return offer_phase(snapshot, inputs(phases=["morning"], category_remaining={c: room for c in PLENTY}))

    roomy = offer(max_units=2, room=10.0)
    assert [(uid, kind) for uid, kind, _ in roomy.deferrals] == [("a", DeferKind.PAUSED), ("c", DeferKind.PHASE_FULL)]
    assert [old["id"] for old, _ in roomy.reoffers] == ["old"]          # high priority: first in line
    assert roomy.reoffers[0][1].phase == "morning" and roomy.still_deferred == []

    broke = offer(max_units=2, room=0.0)
    assert [(uid, kind) for uid, kind, _ in broke.deferrals] == [
        ("a", DeferKind.PAUSED), ("b", DeferKind.BUDGET), ("c", DeferKind.BUDGET)]
    assert broke.reoffers == [] and [(uid, kind) for uid, kind, _ in broke.still_deferred] == [("old", DeferKind.BUDGET)]
    assert broke.still_deferred[0][2].startswith("offered again 2026-11-20 morning: over budget")


def test_from_the_evening_room_no_planned_unit_can_use_is_pooled_for_the_others():
    """A category whose evening work is all deferred (here paused), with nothing later today, gives its
    room to the pool; a unit its own category cannot pay for uses it. A category with work later
    today (`open_elsewhere`) keeps its room, and before the evening nothing is pooled."""
    from datetime import date

    from cass_pipelines.domain.phase_offer import PhaseSnapshot, offer_phase
    from cass_pipelines.domain.states import DeferKind

    need = inputs().cost("writing_session")
    room = {**{c: 0.0 for c in PLENTY}, "creative": need / 2, "research": need}
    own = [planned("w", "writing_session"), planned("k", "knowledge_building")]

    def offer(phase: str, paused: dict, open_elsewhere: frozenset = frozenset()):
        snapshot = PhaseSnapshot(day=date(2026, 11, 20), phase=phase, own=own, waiting=[], paused=paused, idle=True,
                                 max_units=4, open_elsewhere=open_elsewhere)
        return offer_phase(snapshot, inputs(phases=[phase], category_remaining=room,
                                            largest_call={"writing_session": need / 3}))

    pooled = offer("evening", paused={"research": "quiet week"})
    assert [(uid, kind) for uid, kind, _ in pooled.deferrals] == [("k", DeferKind.PAUSED)]   # w runs on the pool
    kept = offer("evening", paused={"research": "quiet week"}, open_elsewhere=frozenset({"research"}))
    assert [(uid, kind) for uid, kind, _ in kept.deferrals] == [("w", DeferKind.BUDGET), ("k", DeferKind.PAUSED)]
    assert "and the pool" not in kept.deferrals[0][2] and "unit needs" in kept.deferrals[0][2]
    busy = offer("evening", paused={})                      # research runs its own unit: no room to give
    assert [(uid, kind) for uid, kind, _ in busy.deferrals] == [("w", DeferKind.BUDGET)]
    afternoon = offer("afternoon", paused={"research": "quiet week"})
    assert [(uid, kind) for uid, kind, _ in afternoon.deferrals] == [("w", DeferKind.BUDGET), ("k", DeferKind.PAUSED)]


def test_a_phase_opening_offers_one_unit_of_a_template_again_however_many_wait():
    """Three catch-ups a pause deferred on three days wait: the opening offers the oldest again, the others
    stay deferred (`same_template`) for a later phase. A unit of the template the phase already has (planned,
    or run) counts, and the pool, which admits work its category cannot pay for, keeps the rule."""
    from datetime import date

    from cass_pipelines.domain.phase_offer import PhaseSnapshot, offer_phase
    from cass_pipelines.domain.states import DeferKind

    catchups = [planned(f"cc{n}", "conversation_catchup", status="deferred", defer_kind="paused", reason="paused: m")
                for n in (1, 2, 3)]
    growth = planned("g", "growth_edge_work", status="deferred", reason="budget: no room")

    def offer(own, phase="afternoon", room=PLENTY):
        snapshot = PhaseSnapshot(day=date(2026, 11, 20), phase=phase, own=own, waiting=[*catchups, growth],
                                 paused={}, idle=True, max_units=4)
        return offer_phase(snapshot, inputs(phases=[phase], category_remaining=dict(room)))

    def waits(o):
        return [(uid, kind) for uid, kind, _ in o.still_deferred]

    alone = offer(own=[])
    assert [old["id"] for old, _ in alone.reoffers] == ["g", "cc1"]            # oldest of the three
    assert waits(alone) == [("cc2", DeferKind.SAME_TEMPLATE), ("cc3", DeferKind.SAME_TEMPLATE)]
    assert "afternoon already has a unit of conversation_catchup" in alone.still_deferred[0][2]
    for own in ([planned("p", "conversation_catchup")], [planned("done", "conversation_catchup", status="completed")]):
        taken = offer(own)
        assert [old["id"] for old, _ in taken.reoffers] == ["g"], own
        assert waits(taken) == [(f"cc{n}", DeferKind.SAME_TEMPLATE) for n in (1, 2, 3)]
    # Memory has no room of its own; research has nothing to run this evening, so its room is pooled.
    pooled = offer([], phase="evening", room={**{c: 0.0 for c in PLENTY}, "research": 10.0})
    assert [old["id"] for old, _ in pooled.reoffers] == ["cc1"]
    assert waits(pooled) == [("cc2", DeferKind.SAME_TEMPLATE), ("cc3", DeferKind.SAME_TEMPLATE)]
    # While memory is still paused they stay deferred by the pause (`resume` takes those back), not by the
    # rule, though the phase has a catch-up (done before the pause).
    done = [planned("done", "conversation_catchup", status="completed")]
    still = offer_phase(PhaseSnapshot(day=date(2026, 11, 20), phase="afternoon", own=done, waiting=catchups,
                                      paused={"memory": "m"}, idle=True, max_units=4),
                        inputs(phases=["afternoon"], category_remaining=dict(PLENTY)))
    assert waits(still) == [(f"cc{n}", DeferKind.PAUSED) for n in (1, 2, 3)]
    # And in a phase already full: the pause holds them, not the phase's unit limit.
    full = offer_phase(PhaseSnapshot(day=date(2026, 11, 20), phase="afternoon", own=[planned("g2", "growth_edge_work")],
                                     waiting=catchups, paused={"memory": "m"}, idle=True, max_units=1),
                       inputs(phases=["afternoon"], category_remaining=dict(PLENTY)))
    assert waits(full) == [(f"cc{n}", DeferKind.PAUSED) for n in (1, 2, 3)]



def test_a_waiting_unit_whose_work_is_whatever_is_pending_is_superseded_by_a_later_one_done(tmp_path):
    """Pure: a catch-up planned in the morning for the evening, waiting since, is superseded by a catch-up
    (of any origin) that started once that evening began, named in the reason; one done before it was due
    (the evening's conversations were still to come) leaves it waiting. A synthesis (work of its own focus)
    is never superseded, however many are done after it."""
    from datetime import date, datetime, timedelta, timezone

    from cass_pipelines.domain.phase_offer import superseded
    from cass_pipelines.domain.phases import phase_window
    from cass_pipelines.domain.settings import Settings

    settings = Settings(home=tmp_path)
    day = date(2026, 11, 20)
    made = datetime(2026, 11, 20, 7, tzinfo=timezone.utc)
    evening = phase_window(day, "evening", settings)[0]
    waiting = [planned(t, t, status="deferred", defer_kind="paused", date=day, phase="evening", created_at=made)
               for t in ("conversation_catchup", "synthesis")]

    def done(started_at):
        return {t: {"id": f"later_{t}", "date": day, "phase": "night", "started_at": started_at}
                for t in ("conversation_catchup", "synthesis")}

    [(uid, reason)] = superseded(waiting, done(evening + timedelta(hours=3)), REGISTRY, settings)
    assert uid == "conversation_catchup" and reason.startswith("superseded by later_conversation_catchup"), reason
    assert superseded(waiting, done(evening - timedelta(hours=1)), REGISTRY, settings) == []
    assert superseded(waiting, {}, REGISTRY, settings) == []

def test_a_look_back_counts_only_days_that_were_not_paused():
    from datetime import date

    from cass_pipelines.domain.pauses import look_back

    day = date(2026, 12, 18)
    assert look_back(day, 7, []) == date(2026, 12, 11)
    # Paused from the 8th to the 17th (both partly): the week's look-back reaches the 7 days before them.
    assert look_back(day, 7, [(date(2026, 12, 8), date(2026, 12, 17))]) == date(2026, 12, 1)
    assert look_back(day, 7, [(date(2026, 11, 1), date(2026, 11, 3))]) == date(2026, 12, 11)   # long before


def test_a_category_look_back_skips_global_pauses_and_its_own_only():
    from datetime import date

    from cass_pipelines.domain.pauses import look_backs

    day = date(2026, 12, 18)
    since = look_backs(day, 7, [(None, date(2026, 12, 15), date(2026, 12, 15)),
                                ("research", date(2026, 12, 8), date(2026, 12, 17)),
                                ("journal", date(2026, 12, 12), date(2026, 12, 13))])
    assert since.of("creative") == since.everything == date(2026, 12, 10)   # only the global day
    assert since.of("research") == date(2026, 12, 1)    # its own ten days (the global one among them)
    assert since.of("journal") == date(2026, 12, 8)     # the global day and its own two
    assert look_backs(day, 7, []).of("research") == date(2026, 12, 11)


def test_a_research_pause_stops_the_clock_of_work_it_holds_at_a_research_step():
    """The look-back of a template's work starts at the earliest of its category's and those of its steps
    that call the model: curiosity work with a research step waits as long as research's clock says (a
    research pause holds it), curiosity work without one and a research-free template keep their own."""
    from datetime import date

    from cass_pipelines.domain.pauses import look_backs

    day = date(2026, 12, 18)
    since = look_backs(day, 7, [("research", date(2026, 12, 8), date(2026, 12, 17))]).with_templates(REGISTRY)
    assert "research.run_single" in REGISTRY.templates["open_question_review"].action_sequence
    assert since.templates["open_question_review"] == since.of("research") == date(2026, 12, 1)
    assert "morning_reflection" not in since.templates and since.of("curiosity") == date(2026, 12, 11)
    assert look_backs(day, 7, []).with_templates(REGISTRY).templates == {}


def test_work_that_would_stop_at_a_step_of_a_paused_category_waits_as_paused():
    """open_question_review (curiosity) has a research step that calls the model: while research is paused,
    a unit of it would run its first step and stop there at every opening. It waits `paused` instead (so
    `resume --category research` takes it back), with the paused category and the step in its reason,
    planned or waiting; one already past that step runs. A step that calls no model (writing_session's
    wiki.create_note, a research action) is not refused by the pause and holds nothing back."""
    from datetime import date

    from cass_pipelines.domain.phase_offer import PhaseSnapshot, offer_phase
    from cass_pipelines.domain.states import DeferKind

    own = [planned("q", "open_question_review"), planned("ws", "writing_session")]
    waiting = [planned(uid, "open_question_review", status="deferred", defer_kind="paused", reason="paused: m",
                       started_at="earlier") for uid in ("past", "before")]
    snapshot = PhaseSnapshot(day=date(2026, 11, 20), phase="evening", own=own, waiting=waiting,
                             paused={"research": "quiet week"}, idle=True, max_units=4,
                             completed={"past": frozenset({0, 1}), "before": frozenset({0})})
    offer = offer_phase(snapshot, inputs(phases=["evening"]))
    assert [(uid, kind) for uid, kind, _ in offer.deferrals] == [("q", DeferKind.PAUSED)]
    assert offer.deferrals[0][2] == ("paused: quiet week (category research paused; "
                                     "its step research.run_single would stop it)")
    assert [old["id"] for old, _ in offer.reoffers] == ["past"]            # past the research step: it runs
    assert [(uid, kind) for uid, kind, _ in offer.still_deferred] == [("before", DeferKind.PAUSED)]
    assert "its step research.run_single" in offer.still_deferred[0][2]
