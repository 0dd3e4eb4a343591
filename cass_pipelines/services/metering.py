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

Work no one waits for (domain/batching.py: memory, night) is sent as a Message Batch when the backend
offers batches: the hold is priced at the batch rates, the request is stored (store/batches.py)
before the batch is created (a gathered batch's holds and requests in one transaction) and its batch id right after, then the batch is polled until it ends
(up to settings.batch_wait_s). Calls an action's threads make together go out in one batch and share
its polls (services/batch_window.py), which stores the batch's id for all of them at once. The answers
one look brings in are settled together through the same path (write-ahead log, ledger rows marked
`batch`, reservations reconciled: one fsync and one ledger transaction for them all). A batch still running when the wait is over
defers the work (BatchPending) with its hold kept; `collect_batches` (batch_sensor) settles it when
it ends, and the work's re-run takes the stored answer instead of paying again (an action's answers
count as used only when the action ends: one that dies first leaves them to its re-run). A request that
comes back errored or expired releases its hold and defers the work, to be asked afresh. A look at a batch
that fails retryably (an outage) is a look at a running batch: the batch goes on and bills, so its work
never fails for it (a failed unit's paid answers would be asked for again by new work).

The cached prefix's TTL: 1 hour for batches (they may run longer than five minutes), and for a
phase whose calls spanned more than five minutes on its last earlier day; else settings.cache_ttl.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta
from typing import Callable, cast

from pydantic import BaseModel

from cass_pipelines.domain.batching import BATCH_CACHE_TTL, BatchState, no_one_waits, request_key
from cass_pipelines.domain.budget_rules import Refusal, Reservation, money, prompt_tokens_bound, web_search_bound
from cass_pipelines.domain.clock import Clock
from cass_pipelines.domain.settings import Settings
from cass_pipelines.llm import holds
from cass_pipelines.llm.base import (
    BatchAnswer,
    BatchClient,
    BatchItem,
    LLMClient,
    LLMError,
    LLMRequest,
    LLMResult,
    PromptCount,
    T,
    Usage,
    json_schema_of,
    prefix_key,
)
from cass_pipelines.llm.pricing import ModelRates, Pricing
from cass_pipelines.services import stopping
from cass_pipelines.services.batch_window import BatchWindow
from cass_pipelines.services.failpoints import failpoint
from cass_pipelines.store import batches, ledger, paid_log
from cass_pipelines.store.budget import Ask, release, reserve_many, settle_all
from cass_pipelines.store.claims import Owner, owner_dead
from cass_pipelines.store.db import Store
from cass_pipelines.store.ledger import LedgerRow, output_history, phase_call_span, prefix_last_used


class BudgetRefused(Exception):
    """A reservation was refused (day or category limit, pause). The action is deferred, not failed."""

    def __init__(self, reason: str, scope: str = "day", day: date | None = None):
        super().__init__(reason)
        self.reason = reason
        self.scope = scope    # "day" | "category" | "pause" (see core.budget.Refusal) | "batch" | "batch_failed"
        self.day = day        # the budget day that refused it (a week's call may be paid from another day)


class BatchPending(BudgetRefused):
    """A batched call had no answer yet when the wait was over (`answer_coming`: a pending batch keeps its
    hold and is collected later, the work resumes to take its answer), or its batch came back without
    one (nothing was billed: the work is asked for afresh). The work is deferred like a refusal."""

    def __init__(self, reason: str, answer_coming: bool = True):
        super().__init__(reason, "batch" if answer_coming else "batch_failed")
        self.answer_coming = answer_coming


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
    batch: bool = False            # no one waits for the answer: send it as a Message Batch when offered
    # An action's calls and a unit's summary (services/runner.py): a batched answer is marked used when
    # the action ends, in the transaction that records its end (store.plans.finish_action; a summary's
    # claim end), not when it is handed out.
    used_when_action_ends: bool = False
    # Work tried before (services/runner.py: an action started earlier, a summary paid from another budget):
    # a call not batched now first looks for an answer a batch of this work already paid for, and uses it.
    tried_before: bool = False

    @classmethod
    def waiting_for_no_one(cls, settings: Settings, **fields) -> "MeterContext":
        """A context whose calls are batched when settings allow and no one waits (core/batching.py)."""
        return cls(**fields, batch=settings.batch_work and no_one_waits(fields["category"], fields.get("phase")))


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
        self._reads: dict[tuple, object] = {}   # hold-sizing reads of the ledger, until this client settles
        self._earlier: dict[str, dict] | None = None   # this work's batched requests of earlier runs, by key
        self._counts: dict[tuple, PromptCount] = {}    # a request counted once (the decision's is estimated first)
        self._counts_lock = threading.Lock()           # (not _reads_lock: a ledger read holds it across an open)
        self._reads_lock = threading.Lock()
        # A batched call's prompt count, whether its bound is measured, its request key and model, until held.
        self._asked: dict[str, tuple[PromptCount, bool, str, str]] = {}
        self._window = BatchWindow(cast(BatchClient, inner), settings.batch_poll_s,
                                   on_hold=self._held, on_sent=self._stored_sent,
                                   on_answers=self._settle_answers) if self.batching else None

    def model_for(self, tier: str) -> str:
        return self.inner.model_for(tier)

    def count_tokens(self, request: LLMRequest, schema: type[BaseModel] | None = None) -> PromptCount:
        return self._count(request, schema)

    def text(self, request: LLMRequest) -> LLMResult:
        return self._metered(request, None)

    def structured(self, request: LLMRequest, schema: type[T]) -> LLMResult[T]:
        return self._metered(request, schema)

    @property
    def batching(self) -> bool:
        return self.ctx.batch and hasattr(self.inner, "submit_batch")

    @contextmanager
    def coming(self, calls: int) -> Iterator[None]:
        """`calls` batched calls start together in this block: they go out in one batch, however late
        a thread starts (services/batch_window.py: `promise`)."""
        window = self._window
        if window is None:
            yield
            return
        window.promise(calls)
        try:
            yield
        finally:
            window.unpromise()

    def estimate(self, request: LLMRequest, schema: type[BaseModel] | None = None) -> float:
        """The hold for one call as it will be sent (see llm/holds.py)."""
        count = self._count(request, schema)   # (an API call: made with the file let go)
        with self.store.session():   # the ledger figures sizing it, in one open
            request, _ = self._bounded(request)
            input_usd = self._input_usd(request, count)
        rates = self.pricing.rates(self.model_for(request.tier), batch=self.batching)
        return money(input_usd + holds.output_usd(rates, request.max_tokens))

    def _bounded(self, request: LLMRequest, measured: bool = True) -> tuple[LLMRequest, holds.OutputBound]:
        """The request as it will be sent: its output bound (llm/holds.py; with `measured` False, the
        caller's own limit) and its prefix's TTL."""
        history = (self._ledger_read(output_history, self.ctx.action_id, self.model_for(request.tier), self.ctx.date)
                   if self.ctx.action_id and measured else [])
        bound = holds.output_bound(request.max_tokens, history)
        if request.cache_ttl is None:
            span = self._ledger_read(phase_call_span, self.ctx.phase, self.ctx.date) if self.ctx.phase else None
            ttl = BATCH_CACHE_TTL if self.batching else holds.phase_ttl(span, self.settings.cache_ttl)
            request = replace(request, cache_ttl=ttl)
        return replace(request, max_tokens=bound.max_tokens), bound

    def _earlier_request(self, key: str) -> dict | None:
        """The request with this key that this work sent in an earlier run and has not used: pending, or
        collected. The work's earlier requests are read once per client (one open for all of a catch-up's
        calls, and no call counts its prompt for nothing); each is handed out once (a re-ask of the same
        key, once its answer is taken, is a new request)."""
        with self._reads_lock:
            if self._earlier is None:
                self._earlier = batches.earlier_requests(self.store, self.ctx.work_unit_id, self.ctx.action_id)
            return self._earlier.pop(key, None)

    def _ledger_read(self, read: Callable, *args):
        """A ledger figure hold sizing reads (`read(store, *args)`), read once until this client settles an
        answer: the calls an action starts together (a batch's) read the same figures. Output lengths and
        the phase's call span are of earlier days; the prefix's last use may be older than the ledger's,
        which only errs on the safe side (a prefix used since is priced as a cache write, not a read)."""
        key = (read.__name__, *args)
        with self._reads_lock:   # threads asking together read once
            if key not in self._reads:
                self._reads[key] = read(self.store, *args)
            return self._reads[key]

    def _count(self, request: LLMRequest, schema: type[BaseModel] | None) -> PromptCount:
        counter = getattr(self.inner, "count_tokens", None)
        try:
            if counter is not None:
                with self._counts_lock:
                    known = self._counts.get((request, schema))
                if known is not None:
                    return known
                with self.store.released():   # (an API call: never with the file held)
                    count = counter(request, schema)
                with self._counts_lock:
                    self._counts[(request, schema)] = count
                return count
        except LLMError:
            pass   # counting is an optimisation: without it, hold the byte bound below
        # A byte bound on every token; the prefix is priced as a cache write unless the ledger knows it warm.
        return PromptCount(prompt_tokens_bound(request.system_prefix, request.system_suffix, request.prompt,
                                               json.dumps(schema.model_json_schema()) if schema else ""),
                           prompt_tokens_bound(request.system_prefix))

    def _input_usd(self, request: LLMRequest, count: PromptCount) -> float:
        model = self.model_for(request.tier)
        rates = self.pricing.rates(model, batch=self.batching)
        # The backend sends the search tool only when settings allow it; only then can it be billed.
        searches, search_tokens = web_search_bound(request.web_search and self.settings.web_search)
        ttl = request.cache_ttl or self.settings.cache_ttl
        # A backend that knows its cache (the simulated one) says so; otherwise the ledger's record of
        # the prefix's last write or read within the TTL decides.
        known = getattr(self.inner, "prefix_cached", lambda _: None)(request)
        if known is not None:
            warm = known
        else:
            last = self._ledger_read(prefix_last_used, prefix_key(model, request.system_prefix)) if count.prefix else None
            warm = last is not None and self.clock.now() - last < timedelta(
                seconds=holds.TTL_SECONDS[ttl] - holds.WARM_SLACK_S)
        return (holds.input_usd(rates, count, warm=warm, ttl=ttl, extra_tokens=search_tokens)
                + searches * self.pricing.web_search_per_1k / 1000)

    def _hold_all(self, wanted: list[tuple[LLMRequest, PromptCount, bool]]) -> list[tuple[LLMRequest, Reservation]
                                                                                  | BudgetRefused]:
        """Reserve for each call (request, its prompt counted beforehand, whether its output bound is the
        measured one), in turn (store.budget.reserve_many: one transaction for them all); a call the room
        left is short for has its output bound lowered to fit, down to the useful minimum, and asks again.
        Returns per call the request as it will be sent and its reservation, or its refusal."""
        ctx = self.ctx
        # Per call: the request as it will be asked, its bound, its model's rates, its input's price, its refused
        # asks at higher bounds.
        asks: list[tuple[LLMRequest, holds.OutputBound, ModelRates, float, list[str]]] = []
        for request, count, measured in wanted:
            request, bound = self._bounded(request, measured)
            rates = self.pricing.rates(self.model_for(request.tier), batch=self.batching)
            asks.append((request, bound, rates, self._input_usd(request, count), []))
        out: list[tuple[LLMRequest, Reservation] | BudgetRefused | None] = [None] * len(asks)
        todo = list(range(len(asks)))
        while todo:
            held = reserve_many(self.store, [Ask(
                day=ctx.date, category=ctx.category, priority=ctx.priority, work_unit_id=ctx.work_unit_id,
                action_id=ctx.action_id, run_id=ctx.run_id, phase=ctx.phase, honour_pause=not ctx.ignore_pause,
                may_use_reserve=ctx.may_use_reserve, lowers=asks[n][4],
                amount_usd=money(asks[n][3] + holds.output_usd(asks[n][2], asks[n][0].max_tokens)))
                for n in todo], self.settings, self.clock.now())
            again = []
            for n, got in zip(todo, held):
                request, bound, rates, input_usd, lowered = asks[n]
                if not isinstance(got, Refusal):
                    out[n] = (request, got)
                    continue
                fits = holds.tokens_affordable(rates, got.room_usd, input_usd)
                if got.scope == "pause" or fits < bound.minimum or fits >= request.max_tokens:
                    out[n] = BudgetRefused(got.reason, got.scope, ctx.date)
                    continue
                asks[n] = (replace(request, max_tokens=fits), bound, rates, input_usd,
                           [*lowered, got.reservation_id or ""])
                again.append(n)
            todo = again
        return cast(list, out)

    def _reserve(self, request: LLMRequest, count: PromptCount,
                 measured: bool = True) -> tuple[LLMRequest, Reservation]:
        """`_hold_all` for one call; a refusal is raised."""
        held = self._hold_all([(request, count, measured)])[0]
        if isinstance(held, BudgetRefused):
            raise held
        return held

    def _metered(self, asked: LLMRequest, schema: type[BaseModel] | None, measured: bool = True) -> LLMResult:
        if self.batching:
            return self._batched(asked, schema, measured)
        if self.ctx.tried_before and (earlier := self._earlier_request(self._request_key(asked, json_schema_of(schema)))):
            # Funded otherwise than when it was batched (retried, approved, resumed on another day): the
            # answer paid for it is used, or waited for by the work's resume once its batch has ended.
            item, result = self._earlier_answer(earlier, wait=False)
            return self._answer(item, result, asked, schema, again=lambda: self._metered(asked, schema, False))
        count = self._count(asked, schema)   # (an API call: made with the file let go)
        with self.store.session():   # the history reads and the reservation share one open
            request, held = self._reserve(asked, count, measured)
        try:
            with self.store.released():   # a session around the caller's bookkeeping is let go meanwhile
                result = self.inner.structured(request, schema) if schema else self.inner.text(request)
        except LLMError as exc:
            if exc.billed is None:
                release(self.store, held.id, self.clock.now())
                raise
            # A paid response that was unusable (invalid or cut-off structured output): it is
            # recorded and settles the hold exactly like a good one, then the error goes on.
            exc.billed = self._record(held.id, exc.billed, request)
            if cut_at_bound(exc.billed, request, asked):
                return self._metered(asked, schema, measured=False)
            raise
        except BaseException:
            release(self.store, held.id, self.clock.now())
            raise
        recorded = self._record(held.id, result, request)
        if cut_at_bound(recorded, request, asked):   # whole prose, not a clipped one
            return self._metered(asked, schema, measured=False)
        return recorded

    def _record(self, reservation_id: str, result: LLMResult, request: LLMRequest) -> LLMResult:
        """Ledger row from the response's reported usage, priced by Pricing: first appended to the
        write-ahead log of paid answers (so a crash before the database write loses nothing), then
        recorded and the hold settled in one transaction."""
        row = ledger_row(self.pricing, self.clock, self.ctx, reservation_id, result, request)
        record_paid(self.store, self.settings, self.clock, [row])
        self._forget_reads()
        self._tally(result.usage, row.cost_usd, result.offline)
        return replace(result, cost_usd=row.cost_usd)

    # ---- message batches ----------------------------------------------------------------------

    def _batched(self, request: LLMRequest, schema: type[BaseModel] | None, measured: bool = True) -> LLMResult:
        """One call through a Message Batch: the request this work already sent is taken up again
        (pending: waited for; collected: its stored answer, paid once), else a new one is held,
        stored, submitted and waited for. The answer is marked used (a later re-run of the work asks
        afresh) as it is handed out, or, for an action's calls, when the action ends (one that dies
        first leaves it to its re-run); one that cannot be used (cut short, invalid) at once."""
        json_schema = json_schema_of(schema)
        key = self._request_key(request, json_schema)
        earlier = self._earlier_request(key)
        if earlier is None:
            item, batch_id = self._submit(request, schema, json_schema, key, self.model_for(request.tier), measured)
            result = self._awaited_answer(batch_id, item)
        else:
            item, result = self._earlier_answer(earlier, wait=True)
        return self._answer(item, result, request, schema, again=lambda: self._batched(request, schema, False))

    def _request_key(self, request: LLMRequest, json_schema: dict | None) -> str:
        """The key of this work's request: the same prompt of the same work, however it is funded."""
        return request_key(self.ctx.work_unit_id, self.ctx.action_id, self.model_for(request.tier),
                           request.system_prefix, request.system_suffix, request.prompt, json_schema)

    def _earlier_answer(self, earlier: dict, wait: bool) -> tuple[BatchItem, LLMResult]:
        """The answer to a request this work sent in an earlier run: stored (collected, paid once), or
        waited for while its batch runs (`wait`, a batching client's window); otherwise BatchPending."""
        if earlier["state"] == BatchState.SUBMITTING:
            # Its submitter died between creating the batch and storing its id: an answer may still
            # be billed, so the hold stays and nothing is sent again until any such batch has expired.
            raise BatchPending(f"an earlier batch request of this work ({earlier['custom_id']}) may still answer; "
                               "its hold is kept until it would have expired")
        item = _item(earlier)
        if earlier["state"] == BatchState.COLLECTED:
            return item, self._stored_answer(earlier)
        if not wait:
            raise BatchPending(f"its answer comes in message batch {earlier['batch_id']}, still running; "
                               "the work is taken up again when it ends")
        return item, self._awaited_answer(earlier["batch_id"], item)

    def _answer(self, item: BatchItem, result: LLMResult, request: LLMRequest, schema: type[BaseModel] | None,
                again: Callable[[], LLMResult]) -> LLMResult:
        """A batched answer handed out: one cut short by a bound lower than the caller's is asked `again`."""
        sent = item.request
        if result.stop_reason is None:   # (a stored answer keeps no stop reason: its length tells)
            result = replace(result, stop_reason="max_tokens" if result.usage.output_tokens >= sent.max_tokens else None)
        if cut_at_bound(result, sent, request):
            batches.take(self.store, item.custom_id)   # superseded by the re-ask: never handed out again
            return again()
        try:
            parsed = schema.model_validate_json(result.text) if schema else None
        except ValueError as exc:   # paid (already settled) but unusable, as for an interactive answer
            batches.take(self.store, item.custom_id)   # a re-run asks afresh
            raise LLMError(f"batched structured output did not match {schema.__name__}: {exc}"[:500],
                           retryable=True, request_id=result.request_id, billed=result) from None
        if not self.ctx.used_when_action_ends:   # (an action's answers are used when it ends)
            batches.take(self.store, item.custom_id)
        return replace(result, parsed=parsed)

    def _submit(self, request: LLMRequest, schema: type[BaseModel] | None, json_schema: dict | None, key: str,
                model: str, measured: bool) -> tuple[BatchItem, str]:
        """The request held, stored and sent in the window's batch: its item as sent and the batch's id."""
        custom_id = f"cass_{uuid.uuid4().hex}"
        window = cast(BatchWindow, self._window)
        window.expect()   # the batch being gathered waits for this call while its prompt is counted
        try:
            count = self._count(request, schema)   # (an API call: made with the file let go)
            with self._lock:
                self._asked[custom_id] = (count, measured, key, model)
        except BaseException:
            window.withdraw()
            raise
        try:
            with self.store.released():   # (the batch is created by the API; others' calls are waited for)
                sent = window.send(BatchItem(custom_id, request, json_schema))   # held as it goes (`_held`)
        except BudgetRefused:
            raise   # its hold was refused: nothing was stored or sent
        except BaseException as exc:   # no batch was created: nothing can be billed
            batches.ended_without_answer(self.store, custom_id, f"not submitted: {exc}", self.clock.now())
            raise
        if not sent.id_stored:   # the window could not store it for the batch: this call does
            batches.submitted(self.store, [custom_id], sent.batch_id)
        failpoint("batch_submitted")   # a crash here: the batch is collected later, paid once
        return sent.item, sent.batch_id

    def _held(self, items: list[BatchItem]) -> list[BatchItem | BaseException]:
        """The window's gathered items, just before their batch is created: each held (its output bound
        lowered to fit, or refused) and its request stored (state `submitting`), all in one transaction,
        committed with the other works of this process being committed meanwhile. Returns each item as it
        will be sent, or its refusal."""
        ctx = self.ctx
        with self._lock:
            asked = [self._asked.pop(item.custom_id) for item in items]

        def hold_and_store(_conn) -> list[tuple[LLMRequest, Reservation] | BudgetRefused]:
            held = self._hold_all([(item.request, count, measured)
                                   for item, (count, measured, _, _) in zip(items, asked)])
            batches.add_many(self.store, [batches.NewBatchRequest(
                custom_id=item.custom_id, request_key=key, reservation_id=got[1].id, date=ctx.date, phase=ctx.phase,
                category=ctx.category, priority=ctx.priority, work_unit_id=ctx.work_unit_id, action_id=ctx.action_id,
                run_id=ctx.run_id, step_key=ctx.step_key, model=model,
                request={**asdict(got[0]), "json_schema": item.json_schema}, pid=os.getpid(),
                submitted_at=self.clock.now())
                for item, (_, _, key, model), got in zip(items, asked, held) if not isinstance(got, BudgetRefused)])
            return held

        return [got if isinstance(got, BudgetRefused) else BatchItem(item.custom_id, got[0], item.json_schema)
                for item, got in zip(items, self.store.grouped(hold_and_store))]

    def _stored_sent(self, batch_id: str, custom_ids: list[str]) -> None:
        """The window created a batch: its requests' batch id, stored for all of them at once."""
        failpoint("batch_created")     # a crash here: the holds are kept until any batch would have expired
        batches.submitted(self.store, custom_ids, batch_id)

    def _settle_answers(self, batch_id: str, answers: dict[str, BatchAnswer]) -> None:
        """The window saw a batch end: every answer its waiters look for is settled at once."""
        settle_answers(self.store, self.settings, self.pricing, self.clock, batch_id, answers)
        self._forget_reads()

    def _forget_reads(self) -> None:
        with self._reads_lock:
            self._reads.clear()

    def _awaited_answer(self, batch_id: str, item: BatchItem) -> LLMResult:
        """Wait for the batch to end (the window settles its answers) or for the wait to be over; the
        answer, added to this client's sums."""
        deadline, window = time.monotonic() + self.settings.batch_wait_s, cast(BatchWindow, self._window)
        with self.store.released():   # the wait for the batch's end (up to batch_wait_s)
            answer = window.answer(batch_id, item, deadline)
        if answer is None:
            why = "the run is stopping" if stopping.requested() else f"no answer after {self.settings.batch_wait_s:g}s"
            if trouble := window.trouble.get(batch_id):
                why += f" (its last look failed: {trouble})"
            raise BatchPending(f"waiting for message batch {batch_id}: {why}; collected when it ends")
        if answer.result is None:
            raise BatchPending(f"message batch {batch_id} returned no answer ({answer.error}); "
                               "its hold is released and the work is asked for again", answer_coming=False)
        result = replace(answer.result, latency_ms=0, attempts=1, cost_usd=paid_cost(self.pricing, answer.result, True))
        self._tally(result.usage, result.cost_usd, result.offline)
        return result

    def _stored_answer(self, row: dict) -> LLMResult:
        """An answer collected earlier for this work (settled then), with its ledger usage and cost, added
        to this client's sums."""
        paid = ledger.paid(self.store, row["request_id"])
        usage = Usage(*(int(paid.get(k) or 0) for k in ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                                                        "cache_read_input_tokens", "cache_creation_1h_input_tokens")))
        cost, offline = float(paid.get("cost_usd") or 0.0), bool(paid.get("offline"))
        self._tally(usage, cost, offline)
        return LLMResult(text=row["result_text"], parsed=None, usage=usage, model=row["model"],
                         request_id=row["request_id"], latency_ms=0, attempts=1, offline=offline, cost_usd=cost)

    def _tally(self, usage: Usage, cost_usd: float, offline: bool) -> None:
        """One answer used by this client, in its sums."""
        with self._lock:   # handlers may call from several threads (bounded concurrency)
            self.calls += 1
            self.usage += usage
            self.cost_usd = round(self.cost_usd + cost_usd, 9)
            self.offline = self.offline or offline


def cut_at_bound(result: LLMResult, sent: LLMRequest, asked: LLMRequest) -> bool:
    """An answer stopped by an output bound lower than the caller asked for: asked again once, with
    the caller's limit (paid twice; the bound is measured from history, which now includes it)."""
    return result.stop_reason == "max_tokens" and sent.max_tokens < asked.max_tokens


def _item(row: dict) -> BatchItem:
    data = json.loads(row["request"]) if isinstance(row["request"], str) else dict(row["request"])
    json_schema = data.pop("json_schema", None)
    return BatchItem(row["custom_id"], LLMRequest(**data), json_schema)


def ledger_row(pricing: Pricing, clock: Clock, ctx: MeterContext, reservation_id: str, result: LLMResult,
               request: LLMRequest, batch: bool = False) -> LedgerRow:
    """The ledger row of a paid answer: its cost from the usage the response reported."""
    u = result.usage
    return LedgerRow(
        request_id=result.request_id, ts=clock.now(), date=ctx.date, phase=ctx.phase, run_id=ctx.run_id,
        step_key=ctx.step_key, work_unit_id=ctx.work_unit_id, action_id=ctx.action_id, category=ctx.category,
        model=result.model, input_tokens=u.input_tokens, output_tokens=u.output_tokens,
        cache_creation_input_tokens=u.cache_creation_input_tokens, cache_read_input_tokens=u.cache_read_input_tokens,
        cache_creation_1h_input_tokens=u.cache_creation_1h_input_tokens,
        cost_usd=paid_cost(pricing, result, batch), offline=result.offline,
        attempts=result.attempts, latency_ms=result.latency_ms, reservation_id=reservation_id,
        max_tokens=request.max_tokens,
        prefix_key=prefix_key(result.model, request.system_prefix) if request.system_prefix else None, batch=batch)


def paid_cost(pricing: Pricing, result: LLMResult, batch: bool) -> float:
    """What an answer costs, from the usage it reported (the ledger's figure)."""
    return round(pricing.cost(result.model, result.usage, batch=batch), 9)


def record_paid(store: Store, settings: Settings, clock: Clock, rows: list[LedgerRow]) -> None:
    """Paid answers into the write-ahead log (one fsync), then into the ledger with their holds settled
    (one transaction)."""
    paid_log.append(settings.home, rows)
    failpoint("paid_before_ledger")
    settle_all(store, rows, clock.now())


def settle_answers(store: Store, settings: Settings, pricing: Pricing, clock: Clock, batch_id: str,
                   answers: dict[str, BatchAnswer]) -> None:
    """What an ended batch returned for its stored requests (custom id -> answer): the answers are settled
    under their requests' reservations at the batch price, together (write-ahead log first), and their
    text kept; a request with no answer has its hold released. Collecting twice records nothing twice
    (the ledger's request id is the answer's own)."""
    with store.session():   # the rows, the settlements and the requests' states: one open
        rows = batches.by_ids(store, list(answers))
        paid: list[tuple[dict, LLMResult, LedgerRow]] = []
        for custom_id, answer in answers.items():
            row = rows.get(custom_id)
            if row is None or row["state"] == BatchState.COLLECTED:   # not ours, or settled already
                continue
            if answer.result is None:
                batches.ended_without_answer(store, custom_id, answer.error or "no answer", clock.now())
                continue
            ctx = MeterContext(date=row["date"], phase=row["phase"], category=row["category"],
                               priority=row["priority"], work_unit_id=row["work_unit_id"], action_id=row["action_id"],
                               run_id=row["run_id"], step_key=row["step_key"], batch=True)
            paid.append((row, answer.result, ledger_row(pricing, clock, ctx, row["reservation_id"], answer.result,
                                                        _item(row).request, batch=True)))
        if paid:
            record_paid(store, settings, clock, [entry for _, _, entry in paid])
            batches.collected(store, batch_id, [(row["custom_id"], result.request_id, result.text)
                                                for row, result, _ in paid], clock.now())


def collect_batches(inner: LLMClient, store: Store, settings: Settings, pricing: Pricing, clock: Clock,
                    is_run_over: Callable[[str], bool]) -> dict[str, list[str]]:
    """batch_sensor's pass over requests whose submitter is gone (a live one collects its own):
    settle what has ended, and release the hold of a request whose batch id was never stored once
    any batch it might be in has expired. Returns custom ids by their state now (submitted: still waiting)."""
    out: dict[str, list[str]] = {s: [] for s in (BatchState.COLLECTED, BatchState.FAILED, BatchState.LOST,
                                                 BatchState.SUBMITTED)}
    by_batch: dict[str, list[dict]] = {}
    for row in batches.pending(store):
        if not owner_dead(Owner(row["run_id"], row["pid"] or 0, row["host"] or ""), is_run_over):
            continue
        if row["state"] == BatchState.SUBMITTING:
            if clock.now() - row["submitted_at"] > BATCH_EXPIRY:
                batches.ended_without_answer(store, row["custom_id"], "submitter died before the batch id was "
                                             "stored; any batch it made has expired", clock.now(), BatchState.LOST)
                out[BatchState.LOST].append(row["custom_id"])
            continue
        by_batch.setdefault(row["batch_id"], []).append(row)
    for batch_id, rows in by_batch.items():   # one look per batch, whatever number of its requests wait
        answers = cast(BatchClient, inner).collect_batch(batch_id, [_item(r) for r in rows])
        if answers is None:
            out[BatchState.SUBMITTED].extend(r["custom_id"] for r in rows)
            continue
        settle_answers(store, settings, pricing, clock, batch_id,   # (an id it did not answer: still waiting)
                       {r["custom_id"]: answers[r["custom_id"]] for r in rows if r["custom_id"] in answers})
        for custom_id, now in batches.by_ids(store, [r["custom_id"] for r in rows]).items():
            out[now["state"]].append(custom_id)
    return out


BATCH_EXPIRY = timedelta(hours=24, minutes=5)   # a batch ends within 24 hours of its creation
