"""Pauses: a person stops new work, everywhere or in one category (control_flags)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Iterable, Mapping

from cass_pipelines.domain.categories import ModelTier
from cass_pipelines.domain.registry import ActionDef, Registry


def pause_reason(scopes: Mapping[str | None, str], category: str | None) -> str | None:
    """Why new work (of `category`, or any work when None) must not start, or None. `scopes` maps None
    (a global pause) or a category to its reason."""
    if None in scopes:
        return scopes[None]
    if category is not None and category in scopes:
        return f"{scopes[category]} (category {category} paused)"
    return None


def unit_pause_reason(scopes: Mapping[str | None, str], registry: Registry, template_id: str, category: str,
                      completed: Iterable[int] = ()) -> str | None:
    """Why a unit of `category` and `template_id`, its steps at positions `completed` done, must wait for a
    pause, or None: a pause of everything or of its category, or of the category of a step still to run that
    calls the model. A category's pause refuses its actions' calls (services.metering), so such a unit would
    run its first steps and stop there, every time it is offered; a step that calls no model is not stopped,
    and one already run holds nothing (nor has a template gone from the registry any steps)."""
    if reason := pause_reason(scopes, category):
        return reason
    steps = registry.remaining_actions(template_id, completed) if template_id in registry.templates else []
    stopped = next((a for a in steps if _stops(a) and a.category in scopes), None)
    if stopped is None:
        return None
    return f"{scopes[stopped.category]} (category {stopped.category} paused; its step {stopped.id} would stop it)"


def _stops(action: ActionDef) -> bool:
    """A pause of the action's category refuses its call (a step that calls no model is not stopped)."""
    return action.model_tier != ModelTier.NONE


def look_back(day: date, days: int, paused: Iterable[tuple[date, date]]) -> date:
    """The first date of the `days` days before `day` that were not paused (`paused`: first and last date of
    each pause, both wholly or partly paused): a pause stops the clock of the work it deferred, so a week's
    look-back after a ten-day holiday still reaches the days before it."""
    spans = list(paused)
    start, counted = day, 0
    while counted < days:
        start -= timedelta(days=1)
        if not any(first <= start <= last for first, last in spans):
            counted += 1
    return start


@dataclass(frozen=True)
class LookBacks:
    """Where a look-back of deferred work starts, per category: `everything` counts the days no global pause
    held; `categories` has, for each category paused on its own, the start counting the days neither a
    global pause nor its own held (a category's pause stops only its own clock)."""
    everything: date
    categories: Mapping[str, date] = field(default_factory=dict)
    # Templates whose work a pause of a step's category holds too (unit_pause_reason), where that clock
    # starts earlier than their own category's: a research pause stops the clock of curiosity work with a
    # research step (with_templates).
    templates: Mapping[str, date] = field(default_factory=dict)

    def of(self, category: str) -> date:
        return self.categories.get(category, self.everything)

    def with_templates(self, registry: Registry) -> LookBacks:
        """These look-backs, with each template's that starts earlier than its category's: the earliest of
        its category's and those of the categories of its steps that call the model."""
        templates = {}
        for t in registry.templates.values():
            start = min([self.of(t.category)] + [self.of(a.category) for a in registry.template_actions(t.id) if _stops(a)])
            if start < self.of(t.category):
                templates[t.id] = start
        return replace(self, templates=templates)


def look_backs(day: date, days: int, paused: Iterable[tuple[str | None, date, date]]) -> LookBacks:
    """look_back for every category, from the pauses as (category, or None for a global pause; first and
    last date)."""
    spans = list(paused)

    def held(scope: str | None) -> list[tuple[date, date]]:
        return [(first, last) for s, first, last in spans if s == scope]

    return LookBacks(look_back(day, days, held(None)), {
        category: look_back(day, days, held(None) + held(category))
        for category in {scope for scope, _, _ in spans if scope is not None}})
