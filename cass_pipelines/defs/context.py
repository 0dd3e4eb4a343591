"""What every domain's definitions are built from: settings and registry, read once per process.

`build_defs(settings, registry)` (definitions.py) passes them explicitly (the CLI and tests); the code
location as Dagster and `dg` load it reads them once here, from CASS_HOME and the environment.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import dagster as dg

from cass_pipelines.config.registry import load_registry
from cass_pipelines.config.settings import load_settings
from cass_pipelines.defs.partitions import date_partitions, phase_partitions
from cass_pipelines.domain.registry import Registry
from cass_pipelines.domain.settings import Settings


@dataclass(frozen=True)
class DefsContext:
    settings: Settings
    registry: Registry
    phases: dg.MultiPartitionsDefinition
    dates: dg.DailyPartitionsDefinition

    @classmethod
    def of(cls, settings: Settings, registry: Registry) -> DefsContext:
        return cls(settings, registry, phase_partitions(settings), date_partitions(settings))


@cache
def load_time_context() -> DefsContext:
    """Settings and registry as the code location loads them (bad ones fail the load with every error)."""
    settings = load_settings()
    return DefsContext.of(settings, load_registry(settings.actions_file, settings.handler_modules))
