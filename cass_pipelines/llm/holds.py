"""What to hold before a call, close to what it will be billed (pure functions).

- Input: the prompt's tokens counted before the call (the API's token counting; offline, the
  estimate the offline backend bills), with a small margin because a count is an estimate.
- The cacheable prefix is priced at the rate it will be billed: a cache read when the ledger saw
  the same prefix of the same model used within its TTL (less a safety slack), else a cache write;
  plain input when it is shorter than the model's minimum cacheable length (nothing is cached).
- Output: bounded by a per-action `max_tokens` from measured output lengths (a high percentile of
  the action's calls on earlier days plus a margin, or of its model's calls when the action has none;
  the longest with a wider margin when only one or two were measured), never above what the caller
  asked for. An answer cut at that bound is asked
  again once with the caller's limit. When that does not
  fit the room left, the bound is lowered to fit, down to a useful minimum (the action's typical
  output); below that the call is refused.

The output bound is sent to the API as max_tokens, so the output can never exceed what is held.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from cass_pipelines.llm.base import PromptCount
from cass_pipelines.llm.pricing import PER_TOKEN, ModelRates

OUTPUT_PERCENTILE = 0.9
OUTPUT_MARGIN = 1.1           # x the percentile ...
OUTPUT_MARGIN_TOKENS = 32     # ... plus this many tokens
MIN_HISTORY = 3               # fewer measured outputs than this: the longest one, with a wider margin
FEW_MARGIN = 1.5              # x the longest of one or two measured outputs ...
FEW_MARGIN_TOKENS = 64        # ... plus this many tokens
COUNT_MARGIN = 1.02           # token counts are estimates: hold 2% more input ...
COUNT_MARGIN_TOKENS = 16      # ... plus a few tokens
WARM_SLACK_S = 30             # a prefix last used this close to its TTL's end is priced as cold
TTL_SECONDS = {"5m": 300, "1h": 3600}
LONG_PHASE_S = 300            # a phase whose calls spanned longer than this caches with the 1-hour TTL
# The least output worth paying for without history: a share of what the caller asked for.
MIN_OUTPUT_SHARE = 0.5
MIN_OUTPUT_TOKENS = 64


@dataclass(frozen=True)
class OutputBound:
    max_tokens: int   # what the call is sent with (and held for)
    minimum: int      # the least worth calling with when money is short


def percentile(values: Sequence[int], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def output_bound(requested: int, history: Sequence[int]) -> OutputBound:
    """The output bound for a call from the action's measured output lengths (any order): a high
    percentile plus a margin; with one or two measurements, the longest with a wider margin; with
    none, what the caller asked for. An answer cut at a bound below the caller's limit is asked
    again with that limit (services/metering.py), and its length joins the history."""
    if not history:
        return OutputBound(requested, min(requested, max(MIN_OUTPUT_TOKENS, int(requested * MIN_OUTPUT_SHARE))))
    if len(history) < MIN_HISTORY:
        bound = min(requested, math.ceil(max(history) * FEW_MARGIN) + FEW_MARGIN_TOKENS)
    else:
        bound = min(requested, math.ceil(percentile(history, OUTPUT_PERCENTILE) * OUTPUT_MARGIN) + OUTPUT_MARGIN_TOKENS)
    typical = math.ceil(percentile(history, 0.5) * 1.1) + 16
    return OutputBound(max(bound, 1), max(1, min(bound, typical)))


def padded(tokens: int) -> int:
    return math.ceil(tokens * COUNT_MARGIN) + COUNT_MARGIN_TOKENS


def prefix_rate(rates: ModelRates, warm: bool, ttl: str) -> float:
    if warm:
        return rates.cache_read
    return rates.cache_write_1h if ttl == "1h" else rates.cache_write_5m


def input_usd(rates: ModelRates, count: PromptCount, *, warm: bool, ttl: str, extra_tokens: int = 0) -> float:
    """The prompt's cost: the cacheable prefix at the rate it will be billed, the rest as input."""
    cached = count.prefix if count.prefix >= rates.min_cacheable_tokens else 0
    rest = padded(count.total) - cached + extra_tokens
    return (cached * prefix_rate(rates, warm, ttl) + rest * rates.input) / PER_TOKEN


def output_usd(rates: ModelRates, max_tokens: int) -> float:
    return max_tokens * rates.output / PER_TOKEN


def tokens_affordable(rates: ModelRates, room_usd: float, input_cost: float) -> int:
    """The most output tokens `room_usd` pays for after the prompt."""
    return max(int((room_usd - input_cost) * PER_TOKEN / rates.output), 0)


def phase_ttl(span_s: float | None, default: str) -> str:
    """The cached prefix's TTL for a phase: 1 hour when its calls on its last day spanned more than
    five minutes (a 5-minute entry would expire between them), else the configured TTL."""
    return "1h" if span_s is not None and span_s > LONG_PHASE_S else default
