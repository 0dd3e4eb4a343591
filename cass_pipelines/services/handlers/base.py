"""The handler interface: a typed context in, a typed result out.

Handlers read the agent's real data through `ctx.store`, call the model through `ctx.llm` (already
wrapped so every response lands in the ledger and counts against the unit's reservation), and
write what they produce back to the store. They never call `now()`: the clock is `ctx.now`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, Field

from cass_pipelines.domain.registry import ActionDef, Registry
from cass_pipelines.llm.base import LLMClient

if TYPE_CHECKING:
    from cass_pipelines.domain.settings import Settings
    from cass_pipelines.store.store import Store


# Where each artifact type lives (DuckDB table); a journal's id is "<date>/<kind>".
ARTIFACT_TABLES = {
    "insight": "insights", "observation": "growth_observations", "open_question": "open_questions",
    "growth_edge": "growth_edges", "conversation": "conversations", "conversation_summary": "conversation_summaries",
    "journal": "journals", "wiki_note": "wiki_notes", "document": "documents", "research_item": "research_queue",
    "work_unit": "work_units", "reservation": "reservations",
}


class Artifact(BaseModel):
    type: str   # a key of ARTIFACT_TABLES
    id: str
    title: str

    @property
    def location(self) -> str:
        """Where a person finds it, e.g. 'insights/ins_1a2b3c'."""
        return f"{ARTIFACT_TABLES.get(self.type, self.type)}/{self.id}"


class ActionResult(BaseModel):
    success: bool
    message: str
    artifacts: list[Artifact] = Field(default_factory=list)
    insights: list[str] = Field(default_factory=list)
    questions_raised: list[str] = Field(default_factory=list)
    questions_addressed: list[str] = Field(default_factory=list)
    usage: dict[str, int] = Field(default_factory=dict)   # summed Usage of this action's LLM calls
    cost_usd: float = 0.0
    abort_sequence: bool = False   # stop the rest of this unit's actions (not a failure)
    data: dict[str, Any] = Field(default_factory=dict)    # handed to later actions of the unit
    offline: bool = False


@dataclass
class HandlerContext:
    action: ActionDef
    work_unit_id: str
    template_id: str
    focus: str
    motivation: str
    # The day and phase the work is about (store.plans.planned_for): the ones it was planned for, kept when it
    # is offered again later (only then do they differ from `date` and `phase`). Work about a day reads them:
    # its narrative, a phase's wrap-up, its journal and dream (handlers/rhythm.py, journal.py).
    about_day: date
    about_phase: str
    date: date                          # the day and phase the unit runs as: work on whatever is pending now
    phase: str
    now: datetime                       # injected clock reading for this action
    store: "Store"
    llm: LLMClient
    settings: "Settings"
    registry: Registry
    previous: list[ActionResult] = field(default_factory=list)   # earlier actions of this unit, in order
    log: Callable[[str], None] = lambda msg: None


Handler = Callable[[HandlerContext], ActionResult]
Items = list[dict[str, Any]]   # pending records of one kind (handoff.py; shapes in writeback.py)
Writer = Callable[[HandlerContext, Items, bool], list[Artifact]]   # (ctx, items, offline) -> what it wrote
