"""The code location: every domain's definitions under `defs/` (day, journal, memory, budget, sources,
dead_letters, week, approvals) plus the shared resources, executor and loggers.

Dagster, the daemon and `dg` load `defs` (the defs folder; settings and registry read once, a bad one
fails the load naming file, template, action and field). The CLI and tests call `build_defs` with the
settings and registry they already hold; both compose the same per-domain `build` functions.
"""
from __future__ import annotations

from pathlib import Path

import dagster as dg

from cass_pipelines.defs import resources
from cass_pipelines.defs.approvals import definitions as approvals
from cass_pipelines.defs.budget import definitions as budget
from cass_pipelines.defs.context import DefsContext
from cass_pipelines.defs.day import definitions as day
from cass_pipelines.defs.dead_letters import definitions as dead_letters
from cass_pipelines.defs.journal import definitions as journal
from cass_pipelines.defs.memory import definitions as memory
from cass_pipelines.defs.sources import definitions as sources
from cass_pipelines.defs.week import definitions as week
from cass_pipelines.domain.registry import Registry
from cass_pipelines.domain.settings import Settings

DOMAINS = (day, journal, memory, budget, sources, dead_letters, week, approvals)


def build_defs(settings: Settings, registry: Registry) -> dg.Definitions:
    ctx = DefsContext.of(settings, registry)
    return dg.Definitions.merge(*(domain.build(ctx) for domain in DOMAINS), resources.shared(ctx))


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
