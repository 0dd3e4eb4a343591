"""The agent's goals and its week.

At the start of a week the agent, in its own voice, makes goals from its growth edges and open
questions when it holds none, and chooses the week's goals and intention (`plan_week`, behind the
`weekly_intention` asset). Each day's decision sees that intention, the goals' progress, yesterday's
threads of work and what has worked lately (`WeekContext`); every unit names the goal it serves or
says why none. A finished unit's summary is written back to its goal as a progress note.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Callable, Literal, Optional

from pydantic import BaseModel, Field, create_model

from cass_pipelines.domain.categories import Category
from cass_pipelines.domain.goals import (
    MAX_ACTIVE_GOALS,
    NO_GOAL,
    WEEK_GOALS,
    clip,
    learning_digest,
    week_end,
    week_over,
    week_start,
)
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.domain.plan_rules import ProposedUnit
from cass_pipelines.domain.registry import Registry
from cass_pipelines.domain.settings import Settings
from cass_pipelines.domain.states import GoalSource, GoalStatus
from cass_pipelines.llm.base import LLMClient, LLMRequest
from cass_pipelines.services.handlers.quoting import NOTICE, quote
from cass_pipelines.services.metering import BudgetRefused
from cass_pipelines.services.once import made_once
from cass_pipelines.services.runtime import Runtime
from cass_pipelines.services.watches import journals_coming
from cass_pipelines.store import claims, journal, learning, persona, weeks
from cass_pipelines.store import goals as goal_store
from cass_pipelines.store.budget import budget_status, refused_money
from cass_pipelines.store.claims import Owner, never_over
from cass_pipelines.store.control import paused_reason
from cass_pipelines.store.db import Store

WEEK_ACTION_ID = "plan.week"          # the ledger's action id of the weekly planning calls
WEEK_CATEGORY = Category.SYSTEM       # what they are funded as (a pause of it refuses them)
WEEK_MAX_TOKENS = 900
MAX_THREADS = 4
MAX_PROGRESS_NOTES = 2
# Which work advances a goal grown from a growth edge, or from an open question.
EDGE_CATEGORIES = ("growth", "reflection")
QUESTION_CATEGORIES = ("curiosity", "research")


def goal_templates(registry: Registry, categories: tuple[str, ...]) -> list[str]:
    return sorted(t.id for t in registry.templates.values() if t.plannable and t.category in categories)


# ---- goals the agent makes ----------------------------------------------------------------------

def proposal_schema(refs: list[str]) -> type[BaseModel]:
    goal = create_model(
        "ProposedGoal",
        title=(str, Field(description="the goal in a few words, in my own voice")),
        success_criterion=(str, Field(description="how I will know I reached it: something I can check")),
        grows_from=(Literal[tuple(refs)],  # type: ignore[valid-type,arg-type]
                    Field(description="the growth edge or open question it grows from")),
    )
    return create_model("GoalProposal",
                        goals=(list[goal], Field(description=f"1 to {WEEK_GOALS} goals")))  # type: ignore[valid-type]


def propose_goals(rt: Runtime, llm: LLMClient, prefix: str, day: date, now: datetime) -> list[str]:
    """When no goal is active, the agent makes some from its growth edges and open questions."""
    edges = persona.growth_edges(rt.store, limit=5)
    questions = persona.open_questions(rt.store, limit=5)
    refs = {e["id"]: ("edge", e["area"]) for e in edges} | {q["id"]: ("question", q["question"]) for q in questions}
    if not refs:
        return []
    prompt = "\n".join([
        "It is the start of a week and I hold no active goals. From my growth edges and open questions I "
        f"choose 1 to {WEEK_GOALS} goals worth a week or more of work, each with a success criterion I "
        "could check.", NOTICE,
        quote("my growth edges and open questions (text, then id)",
              "\n".join(f"- {clip(text, 160)} ({rid})" for rid, (_, text) in refs.items()))])
    result = llm.structured(LLMRequest(tier="fast", system_prefix=prefix, prompt=prompt, max_tokens=WEEK_MAX_TOKENS,
                                       purpose=WEEK_ACTION_ID), proposal_schema(list(refs)))
    made: list[str] = []
    seen: set[str] = set()
    for g in result.parsed.goals[:WEEK_GOALS]:
        title = clip(g.title, 200)
        if not title or title.lower() in seen:
            continue
        seen.add(title.lower())
        kind = refs[g.grows_from][0]
        made.append(goal_store.add_goal(
            rt.store, title=title, success_criterion=clip(g.success_criterion, 400), source=GoalSource.AGENT.value,
            origin_ref=g.grows_from, offline=result.offline, day=day, now=now,
            templates=goal_templates(rt.registry, EDGE_CATEGORIES if kind == "edge" else QUESTION_CATEGORIES)))
    return made


# ---- the week's intention -----------------------------------------------------------------------

def week_schema(goal_ids: list[str]) -> type[BaseModel]:
    return create_model(
        "WeekChoice",
        intention=(str, Field(description="my intention for this week, first person, two or three sentences")),
        goal_ids=(list[Literal[tuple(goal_ids)]],  # type: ignore[valid-type,arg-type]
                  Field(description=f"the goals I focus on this week, 1 to {WEEK_GOALS}, most important first")),
    )


@dataclass
class WeekPlan:
    week_start: date
    intention: str
    goal_ids: list[str]
    source: str                 # "llm" | "fallback" | "stored" | "paused" | "budget" (not planned: nothing stored)
    goals_made: list[str] = field(default_factory=list)
    error: str | None = None
    offline: bool = False

    @property
    def waits(self) -> str | None:
        """Why the week was not planned (nothing stored: a later run asks again), or None."""
        return self.error if self.source in ("paused", "budget") else None


def plan_week(rt: Runtime, llm: LLMClient, prefix: str, week: date, now: datetime, owner: Owner | None = None,
              is_run_over: Callable[[str], bool] = never_over) -> WeekPlan:
    """The week's goals and intention, asked once per week (a stored intention is kept). Not while a pause
    holds its category: planned then, the week would keep a fallback made without the agent after `resume`
    (weekly_intention_schedule asks again each morning while the week has no plan). Nor when the budget refuses
    its call: the next run pays from the day it runs (budget_day), not the day that refused it."""
    if stored := _stored_plan(rt, week):
        return stored
    paused = paused_reason(rt.store, WEEK_CATEGORY)
    if paused:
        return WeekPlan(week, "", [], "paused", error=f"paused: {paused}")
    # Asked once: a run of the week beside this one (run-day beside the daemon's) waits for its plan.
    try:
        return made_once(rt.store, claims.week_key(week), owner or Owner.here(None), is_run_over, now,
                         lambda: _stored_plan(rt, week), lambda: _plan_week(rt, llm, prefix, week, now),
                         rt.settings.request_timeout_s * 2 + 60, f"planning the week of {week}")
    except BudgetRefused as exc:   # (the claim let go: the next run asks again)
        return WeekPlan(week, "", [], "paused" if exc.scope == "pause" else "budget", error=refused_wait(exc))


def refused_wait(exc: BudgetRefused) -> str:
    """Why a week's call refused on its way waits, as a refused daily journal does: nothing is stored (a
    plan made on the fallback would be kept for the week) and a later run asks again, paid from budget_day.
    The pause that held it, or the budget day that refused it and why."""
    if exc.scope == "pause":
        return exc.reason
    return f"the budget of {exc.day} refused its call ({exc.reason}); a later day asks again"


def _stored_plan(rt: Runtime, week: date) -> WeekPlan | None:
    stored = goal_store.intention(rt.store, week)
    return WeekPlan(week, stored["intention"], stored["goal_ids"], "stored", offline=stored["offline"]) \
        if stored else None


def _plan_week(rt: Runtime, llm: LLMClient, prefix: str, week: date, now: datetime) -> WeekPlan:
    made: list[str] = []
    error = None
    try:
        if not goal_store.goals(rt.store, GoalStatus.ACTIVE.value, limit=1):
            made = propose_goals(rt, llm, prefix, week, now)
    except BudgetRefused:   # planned on the fallback now, the week would keep it: asked again (plan_week)
        raise
    except Exception as exc:  # the week must still be planned; goals can be made next week or by a person
        error = f"goals not made: {type(exc).__name__}: {clip(exc, 200)}"
    active = goal_store.goals(rt.store, GoalStatus.ACTIVE.value, limit=MAX_ACTIVE_GOALS)
    plan = None
    if active:
        try:
            plan = _ask_week(rt, llm, prefix, week, active)
        except BudgetRefused:
            raise
        except Exception as exc:  # any other failure of the call or its answer: fall back
            error = f"{type(exc).__name__}: {clip(exc, 300)}"
    if plan is None:
        chosen = [g["id"] for g in active[:WEEK_GOALS]]
        titles = "; ".join(g["title"] for g in active[:WEEK_GOALS])
        plan = WeekPlan(week, f"This week I keep working on what I hold: {titles or 'my growth edges'}.",
                        chosen, "fallback", error=error)
    plan.goals_made, plan.error = made, plan.error or error
    goal_store.save_intention(rt.store, week=week, intention=plan.intention, goal_ids=plan.goal_ids,
                              source=plan.source, error=plan.error, offline=plan.offline, now=now)
    stored = goal_store.intention(rt.store, week)
    assert stored is not None
    return WeekPlan(week, stored["intention"], stored["goal_ids"], stored["source"], made, stored["error"],
                    stored["offline"])


def _ask_week(rt: Runtime, llm: LLMClient, prefix: str, week: date, active: list[dict]) -> WeekPlan:
    lines = []
    for g in active:
        notes = goal_store.progress(rt.store, g["id"], limit=MAX_PROGRESS_NOTES, through=week - timedelta(days=1))
        lines.append(f"- {clip(g['title'], 120)} ({g['id']}); done when: {clip(g['success_criterion'], 160)}"
                     + "".join(f"\n    progress {n['date']}: {clip(n['note'], 140)}" for n in notes))
    digest = learning_digest(learning.template_stats(rt.store, week - timedelta(days=1)),
                             learning.goal_stats(rt.store, week - timedelta(days=1)),
                             {g["id"]: g["title"] for g in active})
    prompt = "\n".join([
        f"A new week begins on {week:%A %Y-%m-%d}. I choose the goals I focus on this week (1 to {WEEK_GOALS}) "
        "and say my intention for the week in my own voice.", NOTICE,
        quote("my active goals (goal, then id) and their latest progress", "\n".join(lines)),
        quote("what has worked for me lately", "\n".join(digest) or "(not enough history yet)")])
    result = llm.structured(LLMRequest(tier="fast", system_prefix=prefix, prompt=prompt, max_tokens=WEEK_MAX_TOKENS,
                                       purpose=WEEK_ACTION_ID), week_schema([g["id"] for g in active]))
    chosen = list(dict.fromkeys(result.parsed.goal_ids))[:WEEK_GOALS]
    if not chosen or not result.parsed.intention.strip():
        raise ValueError("the week's answer named no goal or no intention")
    return WeekPlan(week, clip(result.parsed.intention, 800), chosen, "llm", offline=result.offline)


# ---- what each day's decision sees --------------------------------------------------------------

@dataclass
class WeekContext:
    """The week's part of a day's decision: bounded (fixed counts of clipped lines)."""
    week_start: date
    intention: str | None
    goals: list[dict]            # the week's goals first: {id, title, success_criterion, templates, progress[]}
    threads: list[dict]          # yesterday's finished units: {id, template_id, focus, narrative}
    digest: list[str]
    template_scores: dict[str, float]

    @property
    def goal_ids(self) -> list[str]:
        return [g["id"] for g in self.goals]

    def render(self) -> str:
        goals = "\n".join(
            f"- {clip(g['title'], 100)} ({g['id']}); done when: {clip(g['success_criterion'], 120)}"
            + "".join(f"\n    progress {n['date']}: {clip(n['note'], 120)}" for n in g["progress"])
            for g in self.goals)
        threads = "\n".join(f"- {clip(t['focus'], 60)} ({t['id']}, {t['template_id']}): {clip(t['narrative'], 140)}"
                            for t in self.threads)
        return "\n".join([
            quote(f"my intention for the week of {self.week_start}", clip(self.intention, 600)
                  if self.intention else "(not set yet)"),
            quote("my goals this week (goal, then id) and their progress", goals or "(none active)"),
            quote("yesterday's work I could continue (focus, then unit id and template)", threads or "(none)"),
            quote("what has worked for me lately", "\n".join(self.digest) or "(not enough history yet)"),
            "Each unit names the goal it serves (goal_id), or null when it serves none, with goal_note saying how "
            "it serves the goal or why none. A unit may continue yesterday's unit of the same template "
            "(continues: its unit id) instead of starting fresh."])

    def unit_fields(self) -> dict[str, Any]:
        """The decision schema's extra fields of a unit. Goal ids are an enum (null for none)."""
        fields: dict[str, Any] = {"goal_note": (str, Field(default="", description="how it serves the goal, or "
                                                                                    "why it serves none"))}
        if self.goal_ids:
            fields["goal_id"] = (Optional[Literal[tuple(self.goal_ids)]],  # type: ignore[valid-type]
                                 Field(default=None, description="the goal this unit serves, null for none"))
        if self.threads:
            fields["continues"] = (Literal[("new", *[t["id"] for t in self.threads])],  # type: ignore[valid-type]
                                   Field(default="new", description="yesterday's unit this continues, or new"))
        return fields

    def settle(self, unit: ProposedUnit) -> ProposedUnit:
        """The unit's goal and thread, checked: a goal not held this week and a thread of another
        template are not kept; a continuing unit carries its thread's latest note in its motivation."""
        goal = unit.goal_id if unit.goal_id in self.goal_ids else None
        note = unit.goal_note.strip()
        if goal is None:
            note = note or "no goal named"
            if unit.goal_id not in (None, NO_GOAL):
                note = f"named a goal not held this week ({clip(unit.goal_id, 40)}); {note}"
        thread = next((t for t in self.threads if t["id"] == unit.continues), None)
        if thread is None or thread["template_id"] != unit.template_id:
            return unit.model_copy(update={"goal_id": goal, "goal_note": clip(note, 300), "continues": None})
        motivation = clip(f"{unit.motivation} (continuing {thread['id']}: {thread['narrative']})", 600)
        return unit.model_copy(update={"goal_id": goal, "goal_note": clip(note, 300), "continues": thread["id"],
                                       "motivation": motivation})

    def assign(self, unit: ProposedUnit) -> ProposedUnit:
        """The fallback scorer's goal for a unit: the first week goal its template advances."""
        goal = next((g for g in self.goals if unit.template_id in g["templates"]), None)
        if goal is None:
            return unit.model_copy(update={"goal_id": None, "goal_note": "fallback: this work advances none of "
                                                                          "this week's goals"})
        return unit.model_copy(update={"goal_id": goal["id"], "goal_note": f"fallback: {unit.template_id} "
                                                                            f"advances '{clip(goal['title'], 80)}'"})


def week_context(rt: Runtime, day: date) -> WeekContext:
    """What the day's decision sees of its week; history up to the day before (backfills see their past)."""
    week = week_start(day)
    stored = goal_store.intention(rt.store, week)
    active = goal_store.goals(rt.store, GoalStatus.ACTIVE.value, limit=MAX_ACTIVE_GOALS, created_by=day)
    # The week's goals once it has an intention (in its order); before that, the active goals.
    ordered = ([g for gid in stored["goal_ids"] for g in active if g["id"] == gid] if stored
               else active)[:WEEK_GOALS]
    goals = [{**g, "progress": goal_store.progress(rt.store, g["id"], limit=MAX_PROGRESS_NOTES,
                                                   through=day - timedelta(days=1))} for g in ordered]
    through = day - timedelta(days=1)
    stats = learning.template_stats(rt.store, through)
    digest = learning_digest(stats, learning.goal_stats(rt.store, through), {g["id"]: g["title"] for g in active})
    return WeekContext(week, stored["intention"] if stored else None, goals,
                       goal_store.continuable_units(rt.store, day, limit=MAX_THREADS), digest,
                       {s.key: s.score() for s in stats})


# ---- progress written back ---------------------------------------------------------------------

def record_progress(rt: Runtime, unit: dict, summary: dict | None, now: datetime) -> bool:
    """A finished unit that served a goal has a progress note on it, from its latest work summary."""
    link = goal_store.unit_goal(rt.store, unit["id"])
    if summary is None or link is None or link["goal_id"] is None:
        return False
    lead = (summary["key_insights"] or [summary["narrative"]])[0]
    note = clip(f"{unit['template_id']} ({summary['status']}): {lead}", 400)
    day = unit["date"] if isinstance(unit["date"], date) else date.fromisoformat(str(unit["date"]))
    return goal_store.note_progress(rt.store, goal_id=link["goal_id"], work_unit_id=unit["id"], day=day, note=note,
                                    offline=bool(summary.get("offline")), now=now)


# ---- the weekly journal ------------------------------------------------------------------------

JOURNAL_ACTION_ID = "journal.weekly"
JOURNAL_CATEGORY = Category.JOURNAL


class WeekJournal(BaseModel):
    text: str = Field(description="the week's journal entry, first person, a few paragraphs")
    tone: str = Field(description="one or two words for the week's tone")


def journal_wait(store: Store, settings: Settings, week: date, today: date) -> str | None:
    """Why the journal of the week from `week` is not written on `today` (the agent's date), or None. It is
    written once: not before the week is over, nor while a daily journal of it is still to come
    (watches.journals_coming); a week with nothing recorded gets none, and no call. The weekly_journal asset
    and run-day apply this one rule."""
    last = week_end(week)
    if not week_over(week, today):
        return f"the week ends on {last}: its journal is written once it is over"
    coming = journals_coming(store, settings, week, today)
    if coming:
        return f"the daily journal of {', '.join(d.isoformat() for d in coming)} is still to come: the week's journal waits for it"
    if not weeks.daily_journals(store, week, last) and not weeks.insights(store, week, last):
        return f"nothing was recorded in the week of {week}"
    return None


def budget_day(store: Store, settings: Settings, own: date, action_id: str, now: datetime) -> date:
    """The budget day a week's call (`action_id`) is paid from: its `own` day (the intention's Monday, the
    journal's Sunday), unless that day could not pay for it (its budget spent, or it refused the call); then,
    as a daily journal its own day could not pay for, the day it runs (`now`'s), so the week's work is not put
    off each morning until no one asks (or, planned on the fallback, kept for the week)."""
    if budget_status(store, settings, own)["exhausted"] or refused_money(store, None, own, action_id):
        return max(phase_at(now, settings)[0], own)
    return own


def plan_budget_day(store: Store, settings: Settings, week: date, now: datetime) -> date:
    """The budget day the week's plan is paid from (its Monday, or budget_day's)."""
    return budget_day(store, settings, week, WEEK_ACTION_ID, now)


def journal_budget_day(store: Store, settings: Settings, week: date, now: datetime) -> date:
    """The budget day the week's journal is paid from (its Sunday, or budget_day's)."""
    return budget_day(store, settings, week_end(week), JOURNAL_ACTION_ID, now)


def write_week_journal(rt: Runtime, llm: LLMClient, prefix: str, week: date, now: datetime, owner: Owner | None = None,
                       is_run_over: Callable[[str], bool] = never_over) -> dict:
    """The week's journal in my voice, from its daily journals, goal progress and insights (once
    journal_wait lets it be written); written once (a stored entry is returned as it is; a run beside the
    one writing it waits for its entry)."""
    return made_once(rt.store, claims.week_journal_key(week), owner or Owner.here(None), is_run_over, now,
                     lambda: weeks.weekly_journal(rt.store, week), lambda: _write_week_journal(rt, llm, prefix, week, now),
                     rt.settings.request_timeout_s * 2 + 60, f"writing the journal of the week of {week}")


def _write_week_journal(rt: Runtime, llm: LLMClient, prefix: str, week: date, now: datetime) -> dict:
    last = week_end(week)
    days = weeks.daily_journals(rt.store, week, last)
    found = weeks.insights(rt.store, week, last)
    intention = goal_store.intention(rt.store, week)
    counts = goal_store.progress_counts(rt.store, week, last)
    titles = {g["id"]: g["title"] for g in goal_store.goals(rt.store, limit=MAX_ACTIVE_GOALS * 4)}
    prompt = "\n".join([
        f"I am writing my journal for the week of {week:%Y-%m-%d}: what I meant to do, what I did, what moved "
        "and what did not, and what I carry into next week. I write only about what is below.", NOTICE,
        quote("my intention for the week", intention["intention"] if intention else "(none set)"),
        quote("my goals and how many pieces of work advanced each",
              "\n".join(f"- {clip(titles.get(g, g), 100)}: {n}" for g, n in sorted(counts.items())) or "(none)"),
        quote("my daily journals", "\n".join(f"- {d['date']} ({d['tone']}): {clip(d['text'], 300)}" for d in days)
              or "(none)"),
        quote("insights of the week", "\n".join(f"- {clip(i, 160)}" for i in found[:10]) or "(none)")])
    result = llm.structured(LLMRequest(tier="fast", system_prefix=prefix, prompt=prompt, max_tokens=WEEK_MAX_TOKENS,
                                       purpose=JOURNAL_ACTION_ID), WeekJournal)
    journal.save_entry(rt.store, day=week, kind=weeks.WEEKLY, text=result.parsed.text.strip(),
                       tone=clip(result.parsed.tone, 40), work_unit_id=None, offline=result.offline, now=now)
    written = weeks.weekly_journal(rt.store, week)
    assert written is not None
    return written
