"""Which model calls go through Message Batches, and the states of a batched request (pure rules).

No one waits for memory summarising or for night work: their calls are sent as Message Batches,
billed at the batch price (half the list price), and collected when the batch has ended. Everything
else (the plan's decision call, daytime work, journals) is answered interactively.
"""
from __future__ import annotations

import hashlib
import json
from enum import StrEnum

from cass_pipelines.domain.categories import Category, Phase

# Batches may take longer than five minutes: their cached prefix is written with the 1-hour TTL
# (the batch-processing docs' advice), so requests of one day's batches keep reading it.
BATCH_CACHE_TTL = "1h"


class BatchState(StrEnum):
    SUBMITTING = "submitting"   # held and stored; the batch may or may not have been created
    SUBMITTED = "submitted"     # the batch id is known: waiting for it to end
    COLLECTED = "collected"     # its answer is in the ledger (settled at the batch price)
    FAILED = "failed"           # errored, expired or not submitted: nothing billed, hold released
    LOST = "lost"               # its submitter died before the batch id was stored; hold released at expiry


PENDING = (BatchState.SUBMITTING, BatchState.SUBMITTED)


class UnusedAnswer(StrEnum):
    """A collected answer not yet used, by what can still become of it (the metrics' `work` label)."""
    WAITING = "waiting"         # its work resumes to take it (or its summary is written again from it)
    ABANDONED = "abandoned"     # its unit ended, or was offered again as new work, without it


def no_one_waits(category: str, phase: str | None) -> bool:
    """Whether a call's answer can wait for a batch: memory summarising, and any night work."""
    return category == Category.MEMORY or phase == Phase.NIGHT


def request_key(work_unit_id: str | None, action_id: str | None, model: str, system_prefix: str,
                system_suffix: str, prompt: str, json_schema: dict | None) -> str:
    """Names one request of one piece of work, so a re-run of that work finds the batch it already
    paid for instead of submitting (and paying) again. The output bound is left out: it may differ
    on a later day, the answer asked for does not."""
    text = "\x1f".join([work_unit_id or "", action_id or "", model, system_prefix, system_suffix, prompt,
                        json.dumps(json_schema, sort_keys=True) if json_schema else ""])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]
