"""MeteredClient: wraps any LLMClient so that every call is reserved against the budget first,
recorded in the ledger from the response's real usage, and the reservation settled to that cost.

Per call: one transaction checks pause (a call already in flight finishes; a new one is refused)
and reserves what the call can cost at most, close to its bill (llm/holds.py: counted prompt
tokens, the cached prefix at the rate the ledger's cache state implies, output bounded by the
action's measured lengths and lowered to fit the room left); then the call; then the ledger row and the reconciliation in one
transaction. A failed call releases its hold, unless its response was paid for (LLMError.billed:
invalid or cut-off structured output): that one is recorded and settled like a good response, then
the error is re-raised. The ledger's cost comes from Pricing applied to the usage the response
reported, never from the estimate. No connection is held across the call.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace
from datetime import date, timedelta

from pydantic import BaseModel

from cass_pipelines.domain.budget_rules import Refusal, Reservation, money, prompt_tokens_bound, web_search_bound
from cass_pipelines.domain.clock import Clock
from cass_pipelines.domain.settings import Settings
from cass_pipelines.llm import holds
from cass_pipelines.llm.base import LLMClient, LLMError, LLMRequest, LLMResult, PromptCount, T, Usage, prefix_key
from cass_pipelines.llm.pricing import Pricing
from cass_pipelines.services.failpoints import failpoint
from cass_pipelines.store import paid_log
from cass_pipelines.store.budget import release, reserve, settle
from cass_pipelines.store.db import Store
from cass_pipelines.store.ledger import LedgerRow, output_history, prefix_last_used


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
    may_use_reserve: bool = False  # the decision call: funded by its category, else the reserve


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
        self._lock = threading.Lock()

    def model_for(self, tier: str) -> str:
        return self.inner.model_for(tier)

    def count_tokens(self, request: LLMRequest, schema: type[BaseModel] | None = None) -> PromptCount:
        return self._count(request, schema)

    def text(self, request: LLMRequest) -> LLMResult:
        return self._metered(request, None)

    def structured(self, request: LLMRequest, schema: type[T]) -> LLMResult[T]:
        return self._metered(request, schema)

    def estimate(self, request: LLMRequest, schema: type[BaseModel] | None = None) -> float:
        """The hold for one call as it will be sent (see llm/holds.py)."""
        request, _ = self._bounded(request)
        rates = self.pricing.rates(self.model_for(request.tier))
        return money(self._input_usd(request, self._count(request, schema)) + holds.output_usd(rates, request.max_tokens))

    def _bounded(self, request: LLMRequest) -> tuple[LLMRequest, holds.OutputBound]:
        history = output_history(self.store, self.ctx.action_id, self.ctx.date) if self.ctx.action_id else []
        bound = holds.output_bound(request.max_tokens, history)
        return replace(request, max_tokens=bound.max_tokens), bound

    def _count(self, request: LLMRequest, schema: type[BaseModel] | None) -> PromptCount:
        counter = getattr(self.inner, "count_tokens", None)
        try:
            if counter is not None:
                return counter(request, schema)
        except LLMError:
            pass   # counting is an optimisation: without it, hold the byte bound below
        # A byte bound on every token; the prefix is priced as a cache write unless the ledger knows it warm.
        return PromptCount(prompt_tokens_bound(request.system_prefix, request.system_suffix, request.prompt,
                                               json.dumps(schema.model_json_schema()) if schema else ""),
                           prompt_tokens_bound(request.system_prefix))

    def _input_usd(self, request: LLMRequest, count: PromptCount) -> float:
        model = self.model_for(request.tier)
        rates = self.pricing.rates(model)
        # The backend sends the search tool only when settings allow it; only then can it be billed.
        searches, search_tokens = web_search_bound(request.web_search and self.settings.web_search)
        ttl = self.settings.cache_ttl
        # A backend that knows its cache (the simulated one) says so; otherwise the ledger's record of
        # the prefix's last write or read within the TTL decides.
        known = getattr(self.inner, "prefix_cached", lambda _: None)(request)
        if known is not None:
            warm = known
        else:
            last = prefix_last_used(self.store, prefix_key(model, request.system_prefix)) if count.prefix else None
            warm = last is not None and self.clock.now() - last < timedelta(
                seconds=holds.TTL_SECONDS[ttl] - holds.WARM_SLACK_S)
        return (holds.input_usd(rates, count, warm=warm, ttl=ttl, extra_tokens=search_tokens)
                + searches * self.pricing.web_search_per_1k / 1000)

    def _reserve(self, request: LLMRequest, schema: type[BaseModel] | None) -> tuple[LLMRequest, Reservation]:
        """Reserve for the call; when the room left is short, lower its output bound to fit, down
        to the useful minimum. Returns the request as it will be sent and its reservation."""
        ctx = self.ctx
        request, bound = self._bounded(request)
        count = self._count(request, schema)
        rates = self.pricing.rates(self.model_for(request.tier))
        input_usd = self._input_usd(request, count)
        while True:
            amount = money(input_usd + holds.output_usd(rates, request.max_tokens))
            held = reserve(self.store, day=ctx.date, category=ctx.category, amount_usd=amount,
                           settings=self.settings, priority=ctx.priority, work_unit_id=ctx.work_unit_id,
                           action_id=ctx.action_id, run_id=ctx.run_id, phase=ctx.phase, now=self.clock.now(),
                           honour_pause=not ctx.ignore_pause, may_use_reserve=ctx.may_use_reserve)
            if not isinstance(held, Refusal):
                return request, held
            fits = holds.tokens_affordable(rates, held.room_usd, input_usd)
            if held.scope == "pause" or fits < bound.minimum or fits >= request.max_tokens:
                raise BudgetRefused(held.reason, held.scope)
            request = replace(request, max_tokens=fits)

    def _metered(self, request: LLMRequest, schema: type[BaseModel] | None) -> LLMResult:
        with self.store.session():   # the history reads and the reservation share one open
            request, held = self._reserve(request, schema)
        try:
            result = self.inner.structured(request, schema) if schema else self.inner.text(request)
        except LLMError as exc:
            if exc.billed is None:
                release(self.store, held.id, self.clock.now())
                raise
            # A paid response that was unusable (invalid or cut-off structured output): it is
            # recorded and settles the hold exactly like a good one, then the error goes on.
            exc.billed = self._record(held.id, exc.billed, request)
            raise
        except BaseException:
            release(self.store, held.id, self.clock.now())
            raise
        return self._record(held.id, result, request)

    def _record(self, reservation_id: str, result: LLMResult, request: LLMRequest) -> LLMResult:
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
            reservation_id=reservation_id, max_tokens=request.max_tokens,
            prefix_key=prefix_key(result.model, request.system_prefix) if request.system_prefix else None)
        paid_log.append(self.settings.home, row)
        failpoint("paid_before_ledger")
        settle(self.store, reservation_id, row, self.clock.now())
        with self._lock:   # handlers may call from several threads (bounded concurrency)
            self.calls += 1
            self.usage += u
            self.cost_usd = round(self.cost_usd + cost, 9)
            self.offline = self.offline or result.offline
        return replace(result, cost_usd=cost)
