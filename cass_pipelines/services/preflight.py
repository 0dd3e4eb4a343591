"""What a run needs beyond valid settings and a valid registry, checked before anything is spent:
a price for every configured model, an API key when the mode is `anthropic`, writable homes and a
database this code can read. `validate` reports these; run-day, run-phase and trigger refuse on them."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping

import duckdb

from cass_pipelines.domain.clock import clock_from_env
from cass_pipelines.domain.errors import shown
from cass_pipelines.domain.settings import Settings, SettingsError
from cass_pipelines.llm.factory import resolve_mode
from cass_pipelines.llm.pricing import load_pricing
from cass_pipelines.store.db import Store
from cass_pipelines.store.schema import SchemaTooNewError, check_version


def writable_problem(label: str, path: Path) -> str | None:
    """None when a file can be created in `path` (or in its nearest existing parent, which init extends)."""
    target = path
    while not target.exists() and target != target.parent:
        target = target.parent
    try:   # a real probe: os.access says yes to root on a read-only mount
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as exc:
        return f"{label}: {path}: not writable ({exc.strerror})"
    return None


def run_problems(settings: Settings, env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    problems: list[str] = []
    try:
        load_pricing().check_settings(settings)
    except SettingsError as exc:
        # check_settings says "models.fast: model 'x' has no price ..."; name the file the tier is set in.
        problems += [f"{settings.config_file}: field '{tier}':{why}"
                     for tier, why in (e.split(":", 1) for e in exc.errors)]
    key, base_url = env.get("ANTHROPIC_API_KEY", ""), env.get("ANTHROPIC_BASE_URL", "")
    if resolve_mode(settings, env) == "anthropic":
        if not key:
            source = "CASS_LLM" if env.get("CASS_LLM") else f"{settings.config_file}: field 'llm_mode'"
            problems.append(f"{source}: mode 'anthropic' needs ANTHROPIC_API_KEY in the environment, which is not "
                            "set; set it, or use 'offline' (or 'auto': the API only when a key is set)")
        elif any(c.isspace() or not c.isprintable() for c in key):   # never shown: it is a secret
            problems.append("ANTHROPIC_API_KEY: contains whitespace or control characters (value not shown); "
                            "copy the key again without them")
        if base_url and not base_url.startswith(("http://", "https://")):
            problems.append(f"ANTHROPIC_BASE_URL: expected an http:// or https:// URL, got {shown(base_url)}")
    today = clock_from_env(env).now().astimezone(settings.tz).date()
    if settings.start_date and settings.start_date > today:   # dates run from start_date to today: none would
        problems.append(f"{settings.config_file}: field 'start_date': {settings.start_date} is after today, {today} "
                        f"({settings.timezone}): no day could run")
    dagster = Path(env["DAGSTER_HOME"]) if env.get("DAGSTER_HOME") else settings.home / "dagster"
    problems += [p for p in (writable_problem("CASS_HOME", settings.home),
                             writable_problem("DAGSTER_HOME" if env.get("DAGSTER_HOME") else "CASS_HOME/dagster",
                                              dagster)) if p]
    if settings.db_path.is_file():
        try:
            check_version(Store(settings.db_path))
        except SchemaTooNewError as exc:
            problems.append(str(exc))
        except duckdb.Error as exc:   # e.g. a read-only file system, a file that is not DuckDB
            problems.append(f"{settings.db_path}: cannot open the database: {' '.join(str(exc).split())}")
    return problems
