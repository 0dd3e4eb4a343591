"""Observed source assets: the agent's conversations and self-model, which plans are built from."""

import hashlib
import json

import dagster as dg

from cass_pipelines.resources import CassResource
from cass_pipelines.store import conversations as conv_store
from cass_pipelines.store import persona as persona_store


def _version(facts: dict) -> dg.DataVersion:
    return dg.DataVersion(hashlib.sha256(json.dumps(facts, default=str, sort_keys=True).encode()).hexdigest()[:16])


@dg.observable_source_asset(group_name="agent", description="Imported conversations and their messages.",
                            kinds={"duckdb"})
def conversations(cass: CassResource) -> dg.ObserveResult:
    facts = conv_store.counts(cass.runtime().store)
    return dg.ObserveResult(data_version=_version(facts), metadata={
        "conversations": int(facts.get("conversations") or 0), "messages": int(facts.get("messages") or 0),
        "summaries": int(facts.get("summaries") or 0), "last_message_at": str(facts.get("last_message_at"))})


@dg.observable_source_asset(group_name="agent", kinds={"duckdb"},
                            description="The agent's self-model: identity, growth edges, open questions, insights.")
def self_model(cass: CassResource) -> dg.ObserveResult:
    facts = persona_store.self_model_version(cass.runtime().store)
    return dg.ObserveResult(data_version=_version(facts), metadata={
        k: (int(v) if isinstance(v, int) else str(v)) for k, v in facts.items()})
