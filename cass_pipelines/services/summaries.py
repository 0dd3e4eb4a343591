"""Work summaries: after each unit, one account of what it did, built from its actual ActionResults.

A completed unit gets a fast-tier call that sees the results (steps, insights, questions,
artifacts) and writes the narrative and key insights; if the model offers no insights, the
results' own insights stand in, then the steps' messages, so a completed unit never has an empty
list. A failed unit is described from its record without a call, and so is one that found nothing to
do (no call, nothing made or found: a catch-up with no conversation waiting): a paid account of
nothing would cost more than the work. A unit already summarised with
the same status is returned as stored: re-running the summary asset spends nothing. A summary
written while its call waited for its message batch says so (`awaiting_batch`) and is written again
by the phase's next run, from the answer once the batch has ended (paid once, under the same request).
The cost is the unit's actions plus this summary call.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from cass_pipelines.domain.registry import SUMMARY_ACTION_ID, Registry
from cass_pipelines.domain.settings import Settings
from cass_pipelines.domain.states import UnitStatus
from cass_pipelines.llm.base import LLMClient, LLMError
from cass_pipelines.services.handlers import slices
from cass_pipelines.services.handlers.base import ARTIFACT_TABLES, ActionResult, Artifact
from cass_pipelines.services.handlers.calls import ModelCalls, system_prefix
from cass_pipelines.services.handlers.quoting import NOTICE, quote
from cass_pipelines.services.metering import BatchPending, BudgetRefused
from cass_pipelines.store import summaries
from cass_pipelines.store.db import Store

SUMMARY_MAX_TOKENS = 700
MAX_KEY_INSIGHTS = 5


class UnitSummary(BaseModel):
    narrative: str = Field(description="what I did and what came of it, first person, a few sentences")
    key_insights: list[str] = Field(default_factory=list, description="the unit's most important insights")
    self_rating: int = Field(default=3, ge=1, le=5, description="how well this work went, by my own judgement: "
                                                                  "1 (not worth it) to 5 (very worth it)")


def _unique(values: list[str]) -> list[str]:
    out: list[str] = []
    for v in (v.strip() for v in values):
        if v and v not in out:
            out.append(v)
    return out


def _found_nothing(results: list[ActionResult]) -> bool:
    return not any(r.cost_usd or any(r.usage.values()) or r.artifacts or r.insights or r.questions_raised or r.questions_addressed
                   for r in results)


def _prompt(unit: dict, steps: list[tuple[str, ActionResult]], found: list[str], artifacts: list[Artifact]) -> str:
    return "\n\n".join([
        f"I am writing a short account of a piece of work I just finished ({unit['template_id']}, "
        f"{unit['phase']} of {unit['date']}), from what its steps actually reported.", NOTICE,
        quote("my plan for this work", f"Focus: {unit['focus']}\nWhy: {unit['motivation']}"),
        slices.section("what each step reported", steps, lambda s: f"{s[0]}: {s[1].message}"),
        slices.section("insights the steps produced", found, str),
        slices.section("what I made", artifacts, lambda a: f"{a.title} [{a.type}]"),
        "What I return:\n- narrative: a few sentences on what I did and what came of it.\n"
        f"- key_insights: up to {MAX_KEY_INSIGHTS} of the most important insights, one sentence each.\n"
        "- self_rating: how well this work went, 1 to 5, by my own honest judgement."])


def summarize_unit(store: Store, llm: LLMClient, settings: Settings, registry: Registry, unit_row: dict,
                   action_results: list[ActionResult], now: datetime) -> dict[str, Any]:
    """Summarise one finished unit (`unit_row` as in work_units; results in step order) and store it."""
    existing = summaries.get(store, unit_row["id"])
    if existing and existing["status"] == unit_row["status"] and not existing["awaiting_batch"]:
        return existing
    found = _unique([i for r in action_results for i in r.insights])
    artifacts = list({(a.type, a.id): a for r in action_results for a in r.artifacts}.values())
    template = registry.templates.get(unit_row["template_id"])
    # (a template removed from the registry since: its steps are numbered, and no call is made)
    sequence = template.action_sequence if template else [f"step {i + 1}" for i in range(len(action_results))]
    steps = list(zip(sequence, action_results))
    cost = sum(r.cost_usd for r in action_results)
    offline = any(r.offline for r in action_results)
    narrative, key, no_call, rating, awaiting = "", [], "", None, False
    if unit_row["status"] == UnitStatus.COMPLETED and template and not _found_nothing(action_results):
        calls = ModelCalls(llm, system_prefix(store, registry, llm, "fast"), "fast", SUMMARY_MAX_TOKENS, SUMMARY_ACTION_ID)
        try:
            out = calls.structured(_prompt(unit_row, steps, found, artifacts), UnitSummary)
            narrative, key = out.narrative.strip(), _unique(out.key_insights)[:MAX_KEY_INSIGHTS]
            rating = out.self_rating
        except (BudgetRefused, LLMError) as exc:  # the work is done; its summary must not be lost
            no_call = f"(Summarised without a model call: {exc}.)"
            awaiting = isinstance(exc, BatchPending) and exc.answer_coming
        cost += calls.cost_usd
        offline = offline or calls.offline
    if not narrative:
        narrative = " ".join([f"{unit_row['template_id']} ({unit_row['focus']}) {unit_row['status']}."]
                             + [f"{a}: {r.message}." for a, r in steps]
                             + ([f"Error: {unit_row['error']}"] if unit_row.get("error") else [])
                             + ([no_call] if no_call else []))
    if unit_row["status"] == UnitStatus.COMPLETED:
        key = key or found[:MAX_KEY_INSIGHTS] or _unique([r.message for r in action_results])[:MAX_KEY_INSIGHTS] \
              or [narrative]
    row = {"work_unit_id": unit_row["id"], "date": unit_row["date"], "phase": unit_row["phase"],
           "template_id": unit_row["template_id"], "status": unit_row["status"], "narrative": narrative,
           "key_insights": key or found[:MAX_KEY_INSIGHTS],
           "questions_raised": _unique([q for r in action_results for q in r.questions_raised]),
           "questions_addressed": _unique([q for r in action_results for q in r.questions_addressed]),
           "artifacts": [{**a.model_dump(), "location": a.location} for a in artifacts],
           "cost_usd": round(cost, 9), "offline": offline, "self_rating": rating, "awaiting_batch": awaiting,
           "created_at": now}
    summaries.save(store, row)
    return row


def summary_markdown(row: dict[str, Any]) -> str:
    """The summary as markdown for Dagster metadata and the CLI."""
    def block(title: str, items: list[str]) -> str:
        return "\n".join([f"**{title}**", *(f"- {i}" for i in items)]) if items else ""

    artifacts = [f"{a['title']} — `{a.get('location') or ARTIFACT_TABLES.get(a['type'], a['type']) + '/' + a['id']}`"
                 for a in row["artifacts"]]
    parts = [f"### {row['template_id']} — {row['status']} ({row['phase']}, unit `{row['work_unit_id']}`)",
             row["narrative"], block("Key insights", row["key_insights"]),
             block("Questions raised", row["questions_raised"]),
             block("Questions addressed", row["questions_addressed"]), block("Artifacts", artifacts),
             f"**Cost** ${row['cost_usd']:.4f}" + (" (offline: simulated, not real output)" if row["offline"] else "")]
    return "\n\n".join(p for p in parts if p)
