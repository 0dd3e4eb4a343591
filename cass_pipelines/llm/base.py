"""The client protocol every caller (decision engine, handlers) speaks.

A request says which tier it wants, a cacheable stable system prefix, the volatile prompt, and
optionally a pydantic model for structured output. A result carries the content, exact usage,
model, request id, latency and attempts, and whether it came from the offline backend.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Generic, Mapping, Protocol, TypeVar

from pydantic import BaseModel

from cass_pipelines.domain.errors import masked

T = TypeVar("T", bound=BaseModel)


SECRET_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")


def redact(text: str) -> str:
    """The text with any credential from the environment, and anything shaped like an API key (one cut
    short too), blanked out (for errors, logs, the store)."""
    for var in SECRET_VARIABLES:
        secret = os.environ.get(var)
        if secret and len(secret) >= 8:
            text = text.replace(secret, "[redacted]")
    return masked(text)


class LLMError(RuntimeError):
    """A call that could not produce a usable result. `retryable` says whether trying later may help.
    `billed` is set when a response was received and paid for but was unusable (malformed or invalid
    structured output): its usage and cost must still go to the ledger."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False,
                 request_id: str | None = None, billed: "LLMResult | None" = None):
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.request_id = request_id
        self.billed = billed


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    # Of cache_creation_input_tokens, how many were written with the 1-hour TTL (priced higher).
    cache_creation_1h_input_tokens: int = 0
    web_search_requests: int = 0   # server-side web searches, billed per search

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(*(a + b for a, b in zip(self.astuple(), other.astuple())))

    def astuple(self) -> tuple[int, ...]:
        return (self.input_tokens, self.output_tokens, self.cache_creation_input_tokens,
                self.cache_read_input_tokens, self.cache_creation_1h_input_tokens, self.web_search_requests)


@dataclass(frozen=True)
class LLMRequest:
    tier: str                     # "fast" | "deep" (ModelTier, never "none")
    system_prefix: str            # stable text: persona, catalogue, instructions; cached
    prompt: str                   # volatile text for this call
    max_tokens: int = 1024
    system_suffix: str = ""       # uncached system text that varies per call
    web_search: bool = False      # allow the server-side web search tool (research/world actions)
    purpose: str = ""             # short label for logs ("plan", "session.reflection", ...)
    cache_ttl: str | None = None  # "5m" | "1h" for the cached prefix; None: settings.cache_ttl


@dataclass(frozen=True)
class LLMResult(Generic[T]):
    text: str
    parsed: T | None
    usage: Usage
    model: str
    request_id: str
    latency_ms: int
    attempts: int
    offline: bool
    cost_usd: float
    stop_reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class PromptCount:
    """A prompt's input tokens counted before the call: all of them, and the cacheable prefix's."""
    total: int
    prefix: int


@dataclass(frozen=True)
class BatchItem:
    """One request of a Message Batch. The structured output's JSON schema is carried as data
    (what is stored with the request), so a batch can be collected by another process."""
    custom_id: str
    request: LLMRequest
    json_schema: dict | None = None


@dataclass(frozen=True)
class BatchAnswer:
    """What a batch returned for one request: a billed result (text not yet parsed), or none and why
    (errored, expired, canceled: nothing billed)."""
    custom_id: str
    result: LLMResult | None
    error: str | None = None


def json_schema_of(schema: "type[BaseModel] | dict | None") -> dict | None:
    if schema is None or isinstance(schema, dict):
        return schema
    return schema.model_json_schema()


def prefix_key(model: str, prefix: str) -> str:
    """Names one cached prefix of one model (the provider caches per model and exact text)."""
    return hashlib.sha256(f"{model}\x1f{prefix}".encode("utf-8")).hexdigest()[:32]


class LLMClient(Protocol):
    """Implemented by AnthropicBackend and OfflineBackend."""

    mode: str  # "anthropic" | "offline"

    def model_for(self, tier: str) -> str: ...

    def count_tokens(self, request: LLMRequest, schema: type[BaseModel] | None = None) -> PromptCount: ...

    def text(self, request: LLMRequest) -> LLMResult: ...

    def structured(self, request: LLMRequest, schema: type[T]) -> LLMResult[T]: ...


class BatchClient(Protocol):
    """Message Batches (both backends): submit requests, and later collect what came back."""

    def submit_batch(self, items: list[BatchItem]) -> str: ...

    def collect_batch(self, batch_id: str, items: list[BatchItem]) -> dict[str, BatchAnswer] | None:
        """The answers by custom id once the batch has ended; None while it is still processing."""
        ...


def model_for(models: Mapping[str, str], tier: str) -> str:
    """The configured model for a tier ("fast" | "deep")."""
    try:
        return models[tier]
    except KeyError:
        raise LLMError(f"no model for tier {tier!r}; configured tiers: {', '.join(models)}") from None
