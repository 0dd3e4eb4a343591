"""The Anthropic backend, on the official SDK.

- Credentials and endpoint come from the environment (ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL), read
  by the SDK itself; the key never appears in our messages.
- The SDK retries 408/409/429/5xx/529, honouring retry-after; `settings.max_retries` sets the count.
  A middleware (run once per HTTP attempt inside the SDK's retry loop) counts attempts, gives each
  attempt at most `settings.attempt_timeout_s` (so a hung attempt is retried) and enforces one hard
  deadline per call, `settings.request_timeout_s`, across all attempts and waits.
- Prompt caching: the stable prefix is a system block with cache_control; the suffix is not cached.
- Structured output uses the API's JSON-schema output format; the answer is validated with pydantic.
- Message Batches (`submit_batch`, `collect_batch`): the same request params under a custom id;
  results are read once the batch has ended and billed at the batch price.
- One SDK client per process and configuration (`_connection`), shared by every run and thread of the
  process: its pooled connections (and TLS sessions) outlive a run, and so does what counting a cached
  prefix found (probed once per prefix, however many calls start together, beside the prompt's count).
"""
from __future__ import annotations

import copy
import hashlib
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import anthropic
from pydantic import BaseModel, ValidationError

from cass_pipelines.domain.budget_rules import WEB_SEARCH_MAX_USES
from cass_pipelines.domain.settings import Settings, SettingsError
from cass_pipelines.llm.backend import Backend
from cass_pipelines.llm.base import (
    BatchAnswer,
    BatchItem,
    LLMError,
    LLMRequest,
    LLMResult,
    PromptCount,
    Usage,
    prefix_key,
    redact,
)
from cass_pipelines.llm.pricing import Pricing

WEB_SEARCH_TOOL = {"type": "web_search_20260318", "name": "web_search", "max_uses": WEB_SEARCH_MAX_USES}


def _retryable(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500     # the SDK's own retry policy


@dataclass
class _Call:
    deadline: float            # time.monotonic() by which the call must be over
    timeout_s: float
    attempt_timeout_s: float   # one attempt's share: a hung attempt times out and the SDK retries
    attempts: int = 0

    def expired(self, status: int | None = None, detail: str = "") -> LLMError:
        return LLMError(f"deadline of {self.timeout_s:g}s exceeded after {self.attempts} attempt(s)"
                        + (f"; last answer: {detail}" if detail else ""), status=status, retryable=True)


_CURRENT: ContextVar[_Call | None] = ContextVar("cass_llm_call", default=None)


class _Deadline(anthropic.Middleware):
    """Each attempt gets the attempt timeout, or the time left if that is less. When the time left cannot cover the wait the
    SDK would take before retrying (retry-after), the call fails now instead of sleeping past it.
    Without a retry-after the SDK's own backoff (at most 8 s) can overrun the deadline once."""

    def handle(self, request: anthropic.APIRequest, call_next: Any) -> Any:
        call = _CURRENT.get()
        if call is None:
            return call_next(request)
        call.attempts = request.retries_taken + 1
        left = call.deadline - time.monotonic()
        if left <= 0:
            raise call.expired()
        try:
            response = call_next(request.copy(timeout=min(left, call.attempt_timeout_s)))
        except anthropic.APITimeoutError:
            if call.deadline - time.monotonic() <= 0:
                raise call.expired(detail="timed out") from None   # `from None`: the SDK must not retry
            raise
        status = response.http_response.status_code
        if _retryable(status) and _retry_after(response.http_response.headers) >= call.deadline - time.monotonic():
            raise call.expired(status, f"HTTP {status} with retry-after beyond the deadline")
        return response


def _retry_after(headers: Any) -> float:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return float(headers.get(name)) * scale
        except (TypeError, ValueError):
            continue
    return 0.0


@dataclass
class _Connection:
    """An SDK client, and the counts that price a cached prefix, each asked once however many calls start
    together (a failed one is asked again by the next call): a one-word prompt's tokens with the prefix
    as its system prompt (by prefix key) and without one (by model), counted on `probes`' threads."""
    client: anthropic.Anthropic
    with_prefix: dict[str, Future[int]] = field(default_factory=dict)
    bare: dict[str, Future[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    probes: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=4, thread_name_prefix="cass-probe"))

    def probed(self, cache: dict[str, Future[int]], key: str, count: Callable[[], int]) -> Future[int]:
        with self.lock:
            known = cache.get(key)
            if known is None or (known.done() and known.exception() is not None):
                known = cache[key] = self.probes.submit(count)
            return known


_CONNECTIONS: dict[str, _Connection] = {}
_CONNECTIONS_LOCK = threading.Lock()


def _counted(probe: Future[int]) -> int:
    try:
        return probe.result()
    except LLMError as exc:   # each caller raises its own (the threads waiting on a probe share its error)
        raise copy.copy(exc) from None


def forget_connections() -> None:
    """Start again with no client (a forked child: its parent's sockets and locks are not its own)."""
    global _CONNECTIONS_LOCK
    _CONNECTIONS.clear()
    _CONNECTIONS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=forget_connections)


def _connection(settings: Settings) -> _Connection:
    """The process's client for these settings and this environment (the SDK reads its credentials and
    endpoint from ANTHROPIC_* variables; a change to them gets a new client). Building one costs
    25-50 ms (its SSL context), and a new one opens new connections."""
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith("ANTHROPIC_"))
    key = hashlib.sha256(repr((settings.max_retries, settings.request_timeout_s, env)).encode()).hexdigest()
    with _CONNECTIONS_LOCK:
        if key not in _CONNECTIONS:
            client = anthropic.Anthropic(max_retries=settings.max_retries, timeout=settings.request_timeout_s,
                                         middleware=[_Deadline()])
            _CONNECTIONS[key] = _Connection(client)
        return _CONNECTIONS[key]


class AnthropicBackend(Backend):
    mode = "anthropic"

    def __init__(self, settings: Settings, pricing: Pricing):
        super().__init__(settings, pricing)
        self._connection = _connection(settings)
        self.client = self._connection.client
        if not (self.client.api_key or self.client.auth_token or self.client.credentials):
            raise SettingsError(["LLM mode 'anthropic' needs ANTHROPIC_API_KEY in the environment "
                                 "(or CASS_LLM=offline)"])

    def _params(self, request: LLMRequest, model: str, schema: type[BaseModel] | dict | None) -> dict[str, Any]:
        cache_control: dict[str, str] = {"type": "ephemeral"}
        if (request.cache_ttl or self.settings.cache_ttl) == "1h":
            cache_control["ttl"] = "1h"
        system = [{"type": "text", "text": request.system_prefix, "cache_control": cache_control}]
        if request.system_suffix:
            system.append({"type": "text", "text": request.system_suffix})
        params: dict[str, Any] = {
            "model": model, "max_tokens": request.max_tokens,
            "system": [block for block in system if block["text"]],   # the API rejects empty text blocks
            "messages": [{"role": "user", "content": request.prompt}],
        }
        if schema is not None:
            params["output_config"] = {"format": {"type": "json_schema", "schema": anthropic.transform_schema(schema)}}
        if request.web_search and self.settings.web_search:
            params["tools"] = [WEB_SEARCH_TOOL]
        return params

    def count_tokens(self, request: LLMRequest, schema: type[BaseModel] | None = None) -> PromptCount:
        """The prompt's input tokens by the API's token counting (free, no generation), and the
        cached prefix's: the difference a prefix makes to a one-word prompt, probed once per prefix (and
        the prompt without it once per model) while the prompt itself is counted. Each count is a round
        trip before the call: a new prefix made three of them, one after the other."""
        model = self.model_for(request.tier)
        params = self._params(request, model, schema)
        params.pop("max_tokens")
        if not request.system_prefix:
            return PromptCount(self._count(**params), 0)
        connection, probe = self._connection, {"model": model, "messages": [{"role": "user", "content": "."}]}
        prefixed = connection.probed(connection.with_prefix, prefix_key(model, request.system_prefix), lambda: self._count(
            **probe, system=[{"type": "text", "text": request.system_prefix}]))
        bare = connection.probed(connection.bare, model, lambda: self._count(**probe))
        total = self._count(**params)
        return PromptCount(total, min(_counted(prefixed) - _counted(bare), total))

    def submit_batch(self, items: list[BatchItem]) -> str:
        requests: list[Any] = [{"custom_id": i.custom_id,
                     "params": self._params(i.request, self.model_for(i.request.tier), i.json_schema)} for i in items]
        return self._api("submitting a message batch", lambda: self.client.messages.batches.create(requests=requests)).id

    def collect_batch(self, batch_id: str, items: list[BatchItem]) -> dict[str, BatchAnswer] | None:
        batch = self._api(f"reading message batch {batch_id}", lambda: self.client.messages.batches.retrieve(batch_id))
        if batch.processing_status != "ended":
            return None
        wanted = {i.custom_id: i for i in items}
        out: dict[str, BatchAnswer] = {}
        started = time.monotonic()
        for entry in self._api(f"reading the results of message batch {batch_id}",
                               lambda: list(self.client.messages.batches.results(batch_id))):
            item = wanted.get(entry.custom_id)
            if item is None:
                continue
            result = entry.result
            if result.type == "succeeded":
                model = self.model_for(item.request.tier)
                answer = self._result(result.message, model, 1, started, item.request.cache_ttl, batch=True)
                if item.json_schema is not None:   # structured: the JSON is the last text block, as `structured` reads it
                    answer = replace(answer, text=_last_text(result.message))
                out[entry.custom_id] = BatchAnswer(entry.custom_id, answer)
            else:
                detail = getattr(getattr(result, "error", None), "error", None)
                out[entry.custom_id] = BatchAnswer(entry.custom_id, None, redact(
                    f"{result.type}" + (f": {getattr(detail, 'message', '')}" if detail is not None else "")))
        # A request the results do not mention never came back: nothing was billed for it.
        return {cid: out.get(cid) or BatchAnswer(cid, None, "no result in the batch") for cid in wanted}

    def _api(self, doing: str, call: Any) -> Any:
        try:
            return call()
        except anthropic.APIStatusError as exc:
            raise LLMError(redact(f"Anthropic API error {exc.status_code} {doing}: {exc.api_message or exc.message}"),
                           status=exc.status_code, retryable=_retryable(exc.status_code)) from None
        except anthropic.APIError as exc:
            raise LLMError(redact(f"cannot reach the Anthropic API {doing}: {exc}"), retryable=True) from None

    def _count(self, **params: Any) -> int:
        try:
            return self.client.messages.count_tokens(**params).input_tokens
        except anthropic.APIStatusError as exc:
            raise LLMError(redact(f"Anthropic token counting error {exc.status_code}: {exc.api_message or exc.message}"),
                           status=exc.status_code, retryable=_retryable(exc.status_code)) from None
        except anthropic.APIError as exc:
            raise LLMError(redact(f"cannot count tokens with the Anthropic API: {exc}"), retryable=True) from None

    def _call(self, request: LLMRequest, schema: type[BaseModel] | None) -> LLMResult:
        model = self.model_for(request.tier)
        params = self._params(request, model, schema)
        started = time.monotonic()
        call = _Call(deadline=started + self.settings.request_timeout_s, timeout_s=self.settings.request_timeout_s,
                     attempt_timeout_s=self.settings.attempt_timeout_s)
        token = _CURRENT.set(call)
        try:
            message = self.client.messages.create(**params)
        except LLMError:
            raise
        except anthropic.APIStatusError as exc:
            raise LLMError(redact(f"Anthropic API error {exc.status_code} ({exc.type or 'error'}) after "
                                   f"{call.attempts} attempt(s): {exc.api_message or exc.message}"),
                           status=exc.status_code, retryable=_retryable(exc.status_code),
                           request_id=exc.request_id) from None
        except anthropic.APITimeoutError:
            raise LLMError(f"request timed out after {call.attempts} attempt(s)", retryable=True) from None
        except anthropic.APIConnectionError as exc:
            raise LLMError(redact(f"cannot reach the Anthropic API after {call.attempts} attempt(s): {exc}"),
                           retryable=True) from None
        except (anthropic.AnthropicError, ValueError) as exc:   # a response the SDK could not read
            raise LLMError(redact(f"unreadable response from the Anthropic API: {type(exc).__name__}: {exc}"),
                           retryable=True) from None
        finally:
            _CURRENT.reset(token)
        result = self._result(message, model, call.attempts, started, request.cache_ttl)
        if schema is None:
            return result
        try:
            parsed = schema.model_validate_json(_last_text(message))
        except ValidationError as exc:   # billed but unusable: the ledger still needs it
            raise LLMError(f"structured output did not match {schema.__name__} (stop_reason "
                           f"{message.stop_reason}): {exc.error_count()} error(s): {exc.errors()[0]['msg']}",
                           retryable=True, request_id=result.request_id, billed=result) from None
        return replace(result, parsed=parsed)

    def _result(self, message: Any, model: str, attempts: int, started: float, cache_ttl: str | None,
                *, batch: bool = False) -> LLMResult:
        usage = _usage(message.usage, cache_ttl or self.settings.cache_ttl)
        return LLMResult(
            text="".join(block.text for block in message.content if block.type == "text"),
            parsed=None, usage=usage, model=model,
            request_id=getattr(message, "_request_id", None) or message.id,   # a batched message has none
            latency_ms=int((time.monotonic() - started) * 1000), attempts=attempts, offline=False,
            cost_usd=self.pricing.cost(model, usage, batch=batch), stop_reason=message.stop_reason,
            raw={"id": message.id, "model": message.model})


def _usage(u: Any, cache_ttl: str) -> Usage:
    created = u.cache_creation_input_tokens or 0
    if u.cache_creation is not None:
        one_hour = u.cache_creation.ephemeral_1h_input_tokens
    else:   # no TTL breakdown: attribute writes to the TTL we asked for
        one_hour = created if cache_ttl == "1h" else 0
    return Usage(input_tokens=u.input_tokens, output_tokens=u.output_tokens, cache_creation_input_tokens=created,
                 cache_read_input_tokens=u.cache_read_input_tokens or 0, cache_creation_1h_input_tokens=one_hour,
                 web_search_requests=u.server_tool_use.web_search_requests if u.server_tool_use else 0)


def _last_text(message: Any) -> str:
    """The JSON answer: the last text block (earlier ones may narrate tool use)."""
    texts = [block.text for block in message.content if block.type == "text"]
    return texts[-1] if texts else ""
