"""The code location: settings and registry are validated here, so a bad registry fails the load."""
from __future__ import annotations

import dagster as dg

from cass_pipelines.core.registry import load_registry
from cass_pipelines.core.settings import load_settings

settings = load_settings()
registry = load_registry(settings.actions_file)

defs = dg.Definitions()
