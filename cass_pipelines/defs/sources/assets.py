"""Observed source assets: the agent's conversations and self-model, which plans are built from.

`source_observation_sensor` (sensors.py) records an observation of both every few minutes, so the UI
shows their current version without anyone clicking "Observe"; the observe functions below are what
the UI's button runs. Both read the same facts.
"""

import hashlib
import json

import dagster as dg

from cass_pipelines.defs.resources import CassResource
from cass_pipelines.store import conversations as conv_store
from cass_pipelines.store import persona as persona_store
from cass_pipelines.store.db import Store


def _version(facts: dict) -> dg.DataVersion:
    return dg.DataVersion(hashlib.sha256(json.dumps(facts, default=str, sort_keys=True).encode()).hexdigest()[:16])


def conversations_facts(store: Store) -> tuple[dg.DataVersion, dict]:
    facts = conv_store.counts(store)
    return _version(facts), {
        "conversations": int(facts.get("conversations") or 0), "messages": int(facts.get("messages") or 0),
        "summaries": int(facts.get("summaries") or 0), "last_message_at": str(facts.get("last_message_at"))}


def self_model_facts(store: Store) -> tuple[dg.DataVersion, dict]:
    facts = persona_store.self_model_version(store)
    return _version(facts), {k: (int(v) if isinstance(v, int) else str(v)) for k, v in facts.items()}


SOURCE_FACTS = {"conversations": conversations_facts, "self_model": self_model_facts}


def build_source_assets() -> list[dg.SourceAsset]:
    """`conversations` and `self_model` (built here, not at import, so dg's defs loader sees them once)."""
    # `kinds` is accepted at run time but missing from the decorator's typed overloads.
    @dg.observable_source_asset(group_name="agent", description="Imported conversations and their messages.",
                                kinds={"duckdb"})  # type: ignore[call-overload]
    def conversations(cass: CassResource) -> dg.ObserveResult:
        version, metadata = conversations_facts(cass.runtime().store)
        return dg.ObserveResult(data_version=version, metadata=metadata)

    @dg.observable_source_asset(group_name="agent", kinds={"duckdb"},  # type: ignore[call-overload]
                                description="The agent's self-model: identity, growth edges, open questions, insights.")
    def self_model(cass: CassResource) -> dg.ObserveResult:
        version, metadata = self_model_facts(cass.runtime().store)
        return dg.ObserveResult(data_version=version, metadata=metadata)

    return [conversations, self_model]
