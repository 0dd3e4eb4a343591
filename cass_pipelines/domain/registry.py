"""The action registry and work templates: the models and their per-field rules.

config/registry.py reads the file and reports every problem (file, action or template, field).
"""
from __future__ import annotations

import re
from functools import cached_property
from typing import Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cass_pipelines.domain.categories import PHASES, Category, ModelTier, Priority, Reoffer

_ACTION_ID = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
_TEMPLATE_ID = re.compile(r"^[a-z][a-z0-9_]*$")
# Not a registry action: the ledger's action id for the work-summary call made after every unit.
SUMMARY_ACTION_ID = "summary.work_unit"
# Templates the jobs run by name: a registry without them is refused, naming what needs each.
JOURNAL_TEMPLATE = "daily_journal"
CATCHUP_TEMPLATE = "conversation_catchup"
SUMMARY_RETRY_TEMPLATE = "conversation_summary_retry"
REQUIRED_TEMPLATES = {JOURNAL_TEMPLATE: "journal_job writes each day's journal with it",
                      CATCHUP_TEMPLATE: "memory_job summarises idle conversations with it",
                      SUMMARY_RETRY_TEMPLATE: "`dlq retry` of a conversation's dead letter runs it"}
SUMMARY_ESTIMATE_USD = 0.004   # until the ledger has history for it
# Stated maxima of an action: finite and bounded, so a typo cannot reserve or wait without limit.
MAX_ACTION_COST_USD = 100.0
MAX_OUTPUT_TOKENS = 128_000
MAX_DURATION_MINUTES = 24 * 60
MAX_SEQUENCE_LENGTH = 12   # actions per template: each is a wave of Dagster steps


class ActionDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: str
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    category: Category
    handler: str
    estimated_cost_usd: float = Field(ge=0, le=MAX_ACTION_COST_USD)
    default_duration_minutes: int = Field(gt=0, le=MAX_DURATION_MINUTES)
    priority: Priority = Priority.NORMAL
    requires_idle: bool = False
    model_tier: ModelTier = ModelTier.NONE
    requires_approval: bool = False
    max_output_tokens: int = Field(default=1500, gt=0, le=MAX_OUTPUT_TOKENS)

    @field_validator("id")
    @classmethod
    def _dotted(cls, v: str) -> str:
        if not _ACTION_ID.match(v):
            raise ValueError("must be dotted 'family.verb' in lower case")
        return v

    @field_validator("handler")
    @classmethod
    def _import_path(cls, v: str) -> str:
        if ":" not in v:
            raise ValueError("must be an import path 'package.module:function'")
        return v

    @property
    def family(self) -> str:
        return self.id.split(".", 1)[0]


class TemplateDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: str
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    category: Category
    action_sequence: tuple[str, ...] = Field(min_length=1, max_length=MAX_SEQUENCE_LENGTH)
    # Phase -> preference weight in (0, 1]; a phase not listed is not allowed for the template.
    preferred_phases: dict[str, float] = Field(min_length=1)
    priority: Priority = Priority.NORMAL
    requires_idle: bool = False
    # False for work that its own job runs (the daily journal): never offered to the planner.
    plannable: bool = True
    # Planned like other work, but waits in `awaiting_approval` until a person approves it.
    requires_approval: bool = False
    # `latest`: a unit left waiting is superseded once a later unit of the template completed (any origin).
    reoffer: Reoffer = Reoffer.OWN

    @field_validator("id")
    @classmethod
    def _snake(cls, v: str) -> str:
        if not _TEMPLATE_ID.match(v):
            raise ValueError("must be snake_case")
        return v

    @field_validator("preferred_phases")
    @classmethod
    def _phases(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [p for p in v if p not in PHASES]
        if bad:
            raise ValueError(f"unknown phase(s) {bad}; expected some of {list(PHASES)}")
        if any(not (0 < w <= 1) for w in v.values()):
            raise ValueError("weights must be in (0, 1]")
        return v


class Registry(BaseModel):
    """Actions and templates in force. Template cost and duration derive from their actions."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    source: str
    actions: dict[str, ActionDef]
    templates: dict[str, TemplateDef]

    def template_actions(self, template_id: str) -> list[ActionDef]:
        return [self.actions[a] for a in self.templates[template_id].action_sequence]

    def remaining_actions(self, template_id: str, completed: Iterable[int]) -> list[ActionDef]:
        """The template's actions a unit has still to run, in order: those at positions not `completed`."""
        done = set(completed)
        return [a for i, a in enumerate(self.template_actions(template_id)) if i not in done]

    def template_cost(self, template_id: str, action_costs: dict[str, float] | None = None) -> float:
        """Estimated cost of one unit; `action_costs` (calibrated from the ledger) wins over the registry."""
        costs = action_costs or {}
        return round(sum(costs.get(a.id, a.estimated_cost_usd) for a in self.template_actions(template_id)), 6)

    def template_duration(self, template_id: str) -> int:
        return sum(a.default_duration_minutes for a in self.template_actions(template_id))

    @cached_property
    def superseding(self) -> frozenset[str]:
        """Templates whose waiting units a later completed unit of theirs supersedes (`reoffer: latest`)."""
        return frozenset(t.id for t in self.templates.values() if t.reoffer == Reoffer.LATEST)

    def templates_for_phase(self, phase: str) -> list[TemplateDef]:
        return [t for t in self.templates.values() if t.plannable and phase in t.preferred_phases]

    @cached_property
    def max_sequence_length(self) -> int:
        return max(len(t.action_sequence) for t in self.templates.values())
