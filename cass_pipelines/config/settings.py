"""Reading settings: CASS_HOME/cass.toml plus environment overrides, into the `Settings` model.

Every invalid field is reported at once with where it came from (file or variable) and the bad value.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Mapping

from pydantic import ValidationError

from cass_pipelines.domain.errors import masked, shown

PATH_CHARS = 400   # a home is named in full (a long path cut at 80 characters names nothing)
from cass_pipelines.domain.settings import MAX_CONFIG_BYTES, Settings, SettingsError

_ENV = {
    "CASS_TIMEZONE": "timezone",
    "CASS_DAILY_BUDGET_USD": "daily_budget_usd",
    "CASS_LLM": "llm_mode",
    "CASS_ACTIONS_FILE": "actions_file",
}


def cass_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("CASS_HOME") or Path.cwd() / ".cass").resolve()


def home_errors(env: Mapping[str, str], home: Path) -> list[str]:
    """CASS_HOME and DAGSTER_HOME must be directories (or not exist yet); DAGSTER_HOME must be absolute."""
    errors = []
    if home.exists() and not home.is_dir():
        errors.append(f"CASS_HOME: {shown(str(home), PATH_CHARS)} is not a directory (it is a file); "
                      "point CASS_HOME at a directory or a path that does not exist yet")
    dagster = env.get("DAGSTER_HOME")
    if dagster and not Path(dagster).is_absolute():
        errors.append(f"DAGSTER_HOME: {shown(dagster, PATH_CHARS)} must be an absolute path")
    elif dagster and Path(dagster).exists() and not Path(dagster).is_dir():
        errors.append(f"DAGSTER_HOME: {shown(dagster, PATH_CHARS)} is not a directory (it is a file); "
                      "point DAGSTER_HOME at a directory or a path that does not exist yet")
    return errors


def read_config(config: Path) -> dict:
    """cass.toml as a dict ({} when there is none); an unreadable file is one SettingsError line."""
    if not config.exists():
        return {}
    if not config.is_file():
        raise SettingsError([f"{config}: not a regular file (a directory or device); cass.toml must be a TOML file"])
    try:
        data = config.read_bytes() if config.stat().st_size <= MAX_CONFIG_BYTES else None
        if data is None:
            raise SettingsError([f"{config}: larger than {MAX_CONFIG_BYTES} bytes; not a settings file"])
        return tomllib.loads(data.decode("utf-8"))
    except OSError as exc:
        raise SettingsError([f"{config}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError([f"{config}: invalid TOML: {exc}"]) from None
    except UnicodeDecodeError as exc:
        raise SettingsError([f"{config}: byte {exc.start}: not UTF-8: {exc.reason}"]) from None
    except RecursionError:
        raise SettingsError([f"{config}: invalid TOML: arrays or tables nested too deeply"]) from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read CASS_HOME/cass.toml (if present) and apply environment overrides."""
    env = os.environ if env is None else env
    home = cass_home(env)
    errors = home_errors(env, home)
    if errors:
        raise SettingsError(errors)
    config = home / "cass.toml"
    raw = read_config(config)
    source = {k: str(config) for k in raw}
    if isinstance(raw.get("actions_file"), str) and not Path(raw["actions_file"]).is_absolute():
        raw["actions_file"] = str(home / raw["actions_file"])   # relative to CASS_HOME, not the cwd
    for var, field in _ENV.items():
        if env.get(var):
            raw[field] = env[var]
            source[field] = var
    raw["home"] = home
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            if not err["loc"]:   # a rule across fields: name where each of them came from
                fields = [f for f in Settings.model_fields if f in err["msg"]]
                origin = ", ".join(dict.fromkeys(source.get(f, "default") for f in fields)) or str(config)
                errors.append(f"{origin}: {err['msg'].removeprefix('Value error, ')}")
                continue
            field = ".".join(str(p) for p in err["loc"])
            origin = source.get(str(err["loc"][0]), str(config))
            # The value of a key that is no setting is not echoed: it may be a secret in the wrong place.
            got = "" if isinstance(err.get("input"), dict) or err["type"] == "extra_forbidden" \
                else f" (got {shown(err.get('input'))})"
            errors.append(f"{origin}: field '{field}': {err['msg']}{got}")
        raise SettingsError([masked(e) for e in errors]) from None   # (a validator's message may quote a value)


SAMPLE_CONFIG = """\
# cass-pipelines settings. Environment overrides: CASS_TIMEZONE, CASS_DAILY_BUDGET_USD, CASS_LLM,
# CASS_ACTIONS_FILE. The API key is read from ANTHROPIC_API_KEY only; never put it here.
persona_name = "Cass"
timezone = "{timezone}"
daily_budget_usd = 5.0
# reserve_usd = 0.5           # emergency reserve only critical work may use; default: 10% of the budget
llm_mode = "auto"             # auto | anthropic | offline (auto = anthropic when ANTHROPIC_API_KEY is set)
idle_threshold_minutes = 30
max_units_per_phase = 4

[phase_hours]
morning = [6, 12]
afternoon = [12, 18]
evening = [18, 22]
night = [22, 6]

[category_shares]
system = 0.05
journal = 0.05
memory = 0.10
research = 0.25
reflection = 0.20
growth = 0.15
curiosity = 0.10
creative = 0.10

[models]
fast = "claude-haiku-5-5"
deep = "claude-sonnet-5-5"
"""
