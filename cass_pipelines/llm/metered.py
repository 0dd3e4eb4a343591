"""MeteredClient: wraps any LLMClient so that every call is reserved against the budget first,
recorded in the ledger from the response's real usage, and the reservation settled to that cost.
(Implemented in the budget issue; this file fixes the interface the runner and handlers use.)"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date


class BudgetRefused(Exception):
    """A reservation was refused (day or category limit, pause). The action is deferred, not failed."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class MeterContext:
    date: date
    phase: str | None
    category: str
    priority: str
    work_unit_id: str | None
    action_id: str | None
    run_id: str | None = None
    step_key: str | None = None
    ignore_pause: bool = False   # a forced manual trigger runs while paused (budget limits still hold)
