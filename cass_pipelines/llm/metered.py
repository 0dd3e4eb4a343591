"""MeteredClient: wraps any LLMClient so that every call is reserved against the budget first,
recorded in the ledger from the response's real usage, and the reservation settled to that cost.

Per call: one transaction checks pause (a call already in flight finishes; a new one is refused)
and reserves the worst case; then the call; then the ledger row and the reconciliation in one
transaction. A failed call releases its hold, unless its response was paid for (LLMError.billed:
invalid or cut-off structured output): that one is recorded and settled like a good response, then
the error is re-raised. The ledger's cost comes from Pricing applied to the usage the response
reported, never from the estimate. No connection is held across the call.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace
from datetime import date

from pydantic import BaseModel

from cass_pipelines.core.budget import Refusal, prompt_tokens_bound, reservation_amount, web_search_bound
from cass_pipelines.core.clock import Clock
from cass_pipelines.core.failpoints import failpoint
from cass_pipelines.core.settings import Settings
from cass_pipelines.llm.base import LLMClient, LLMError, LLMRequest, LLMResult, T, Usage
from cass_pipelines.llm.pricing import Pricing
from cass_pipelines.store import paid_log
from cass_pipelines.store.budget import ledger_action_averages, release, reserve, settle
from cass_pipelines.store.db import Store
from cass_pipelines.store.ledger import LedgerRow


class BudgetRefused(Exception):
    """A reservation was refused (day or category limit, pause). The action is deferred, not failed."""

    def __init__(self, reason: str, scope: str = "day"):
        super().__init__(reason)
        self.reason = reason
        self.scope = scope    # "day" | "category" | "pause" (see core.budget.Refusal)


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


class MeteredClient:
    """An LLMClient whose every call is budgeted and recorded. `.calls`, `.usage`, `.cost_usd` and
    `.offline` sum the calls made through this instance (one action, one summary, ...)."""

    def __init__(self, inner: LLMClient, store: Store, settings: Settings, pricing: Pricing, ctx: MeterContext,
                 clock: Clock):
        self.inner, self.store, self.settings, self.pricing, self.ctx, self.clock = (
            inner, store, settings, pricing, ctx, clock)
        self.mode = inner.mode
        self.calls = 0
        self.usage = Usage()
        self.cost_usd = 0.0
        self.offline = False
        self._calibrated: float | None = None
        self._lock = threading.Lock()

    def model_for(self, tier: str) -> str:
        return self.inner.model_for(tier)

    def text(self, request: LLMRequest) -> LLMResult:
        return self._metered(request, None)

    def structured(self, request: LLMRequest, schema: type[T]) -> LLMResult[T]:
        return self._metered(request, schema)

    def estimate(self, request: LLMRequest, schema: type[BaseModel] | None = None) -> float:
        """The hold for one call: worst case from the prompt's size and the output allowance, or
        the action's recent actual cost per call if that is higher."""
        searches, search_tokens = web_search_bound(request.web_search)
        tokens = prompt_tokens_bound(request.system_prefix, request.system_suffix, request.prompt,
                                     json.dumps(schema.model_json_schema()) if schema else "") + search_tokens
        worst = self.pricing.worst_case_cost(self.model_for(request.tier), tokens, request.max_tokens, searches,
                                             self.settings.cache_ttl)
        return reservation_amount(worst, self._calibrated_call())

    def _calibrated_call(self) -> float | None:
        if self._calibrated is None and self.ctx.action_id:
            history = ledger_action_averages(self.store).get(self.ctx.action_id)
            self._calibrated = history.mean_call_usd if history else 0.0
        return self._calibrated

    def _metered(self, request: LLMRequest, schema: type[BaseModel] | None) -> LLMResult:
        ctx = self.ctx
        with self.store.session():   # the calibration read and the reservation share one open
            held = reserve(self.store, day=ctx.date, category=ctx.category, amount_usd=self.estimate(request, schema),
                           settings=self.settings, priority=ctx.priority, work_unit_id=ctx.work_unit_id,
                           action_id=ctx.action_id, run_id=ctx.run_id, phase=ctx.phase, now=self.clock.now(),
                           honour_pause=not ctx.ignore_pause)
        if isinstance(held, Refusal):
            raise BudgetRefused(held.reason, held.scope)
        try:
            result = self.inner.structured(request, schema) if schema else self.inner.text(request)
        except LLMError as exc:
            if exc.billed is None:
                release(self.store, held.id, self.clock.now())
                raise
            # A paid response that was unusable (invalid or cut-off structured output): it is
            # recorded and settles the hold exactly like a good one, then the error goes on.
            exc.billed = self._record(held.id, exc.billed)
            raise
        except BaseException:
            release(self.store, held.id, self.clock.now())
            raise
        return self._record(held.id, result)

    def _record(self, reservation_id: str, result: LLMResult) -> LLMResult:
        """Ledger row from the response's reported usage, priced by Pricing: first appended to the
        write-ahead log of paid answers (so a crash before the database write loses nothing), then
        recorded and the hold settled in one transaction."""
        ctx = self.ctx
        cost = round(self.pricing.cost(result.model, result.usage), 9)
        u = result.usage
        row = LedgerRow(
            request_id=result.request_id, ts=self.clock.now(), date=ctx.date, phase=ctx.phase, run_id=ctx.run_id,
            step_key=ctx.step_key, work_unit_id=ctx.work_unit_id, action_id=ctx.action_id, category=ctx.category,
            model=result.model, input_tokens=u.input_tokens, output_tokens=u.output_tokens,
            cache_creation_input_tokens=u.cache_creation_input_tokens,
            cache_read_input_tokens=u.cache_read_input_tokens,
            cache_creation_1h_input_tokens=u.cache_creation_1h_input_tokens, cost_usd=cost,
            offline=result.offline, attempts=result.attempts, latency_ms=result.latency_ms,
            reservation_id=reservation_id)
        paid_log.append(self.settings.home, row)
        failpoint("paid_before_ledger")
        settle(self.store, reservation_id, row, self.clock.now())
        with self._lock:   # handlers may call from several threads (bounded concurrency)
            self.calls += 1
            self.usage += u
            self.cost_usd = round(self.cost_usd + cost, 9)
            self.offline = self.offline or result.offline
        return replace(result, cost_usd=cost)
