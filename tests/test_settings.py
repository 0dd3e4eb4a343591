"""Settings: cass.toml plus environment overrides; every invalid field reported at once with its name
and bad value. Also the phase windows that the settings define (one timezone for everything)."""
from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from cass_pipelines.config.settings import SAMPLE_CONFIG, load_settings
from cass_pipelines.domain.categories import PHASES, Category
from cass_pipelines.domain.phases import day_bounds, phase_at, phase_window, remaining_phases
from cass_pipelines.domain.settings import DEFAULT_SHARES, Settings, SettingsError


def env_for(home: Path, **extra: str) -> dict[str, str]:
    """An explicit environment (load_settings reads only what it is given)."""
    return {"CASS_HOME": str(home), **extra}


def write_toml(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "cass.toml"
    path.write_text(text, encoding="utf-8")
    return path


def settings_errors(home: Path, **extra: str) -> list[str]:
    with pytest.raises(SettingsError) as info:
        load_settings(env_for(home, **extra))
    assert all(e in str(info.value) for e in info.value.errors)
    return info.value.errors


def test_defaults_match_the_design(tmp_path):
    s = load_settings(env_for(tmp_path / "home"))
    assert s.home == (tmp_path / "home").resolve()
    assert s.timezone == "UTC" and s.daily_budget_usd == 5.0 and s.reserve_usd == 0.5
    assert s.llm_mode == "auto"
    assert s.phase_hours == {"morning": (6, 12), "afternoon": (12, 18), "evening": (18, 22), "night": (22, 6)}
    assert {str(k): v for k, v in s.category_shares.items()} == {
        "system": 0.05, "journal": 0.05, "memory": 0.10, "research": 0.25,
        "reflection": 0.20, "growth": 0.15, "curiosity": 0.10, "creative": 0.10}
    # Every category has a budget share: creative work can be scheduled.
    assert set(s.category_shares) == set(Category)
    assert s.category_limit("creative") == pytest.approx(0.5)
    assert s.db_path == s.home / "cass.duckdb" and s.config_file == s.home / "cass.toml"


def test_cass_home_defaults_to_dot_cass_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings({}).home == (tmp_path / ".cass").resolve()


def test_sample_config_written_by_init_loads_to_the_defaults(tmp_path):
    write_toml(tmp_path, SAMPLE_CONFIG.format(timezone="Europe/Berlin"))
    s = load_settings(env_for(tmp_path))
    d = load_settings(env_for(tmp_path / "empty"))
    assert s.timezone == "Europe/Berlin"
    assert s.model_dump(exclude={"home", "timezone"}) == d.model_dump(exclude={"home", "timezone"})
    assert "ANTHROPIC_API_KEY" in SAMPLE_CONFIG and "sk-" not in SAMPLE_CONFIG


def test_toml_values_are_read(tmp_path):
    write_toml(tmp_path, 'timezone = "America/New_York"\ndaily_budget_usd = 12.5\nreserve_usd = 1.0\n'
                         'llm_mode = "offline"\nidle_threshold_minutes = 45\n'
                         '[models]\nfast = "m-fast"\ndeep = "m-deep"\n')
    s = load_settings(env_for(tmp_path))
    assert (s.timezone, s.daily_budget_usd, s.reserve_usd, s.llm_mode, s.idle_threshold_minutes) == (
        "America/New_York", 12.5, 1.0, "offline", 45)
    assert s.models == {"fast": "m-fast", "deep": "m-deep"}


def test_environment_overrides_win_over_the_file(tmp_path):
    write_toml(tmp_path, 'timezone = "Europe/Paris"\ndaily_budget_usd = 3.0\nllm_mode = "anthropic"\n')
    s = load_settings(env_for(tmp_path, CASS_TIMEZONE="Asia/Tokyo", CASS_DAILY_BUDGET_USD="7.25",
                              CASS_LLM="offline", CASS_ACTIONS_FILE="/somewhere/actions.json"))
    assert (s.timezone, s.daily_budget_usd, s.llm_mode) == ("Asia/Tokyo", 7.25, "offline")
    assert s.actions_file == Path("/somewhere/actions.json")
    # An empty variable is "not set", not an empty value.
    assert load_settings(env_for(tmp_path, CASS_TIMEZONE="")).timezone == "Europe/Paris"


def test_actions_file_in_toml_is_relative_to_cass_home(tmp_path):
    write_toml(tmp_path / "home", 'actions_file = "my_actions.json"\n')
    assert load_settings(env_for(tmp_path / "home")).actions_file == (tmp_path / "home" / "my_actions.json").resolve()


def test_every_invalid_field_is_reported_at_once(tmp_path):
    config = write_toml(tmp_path, """
timezone = "Mars/Olympus_Mons"
daily_budget_usd = -2
llm_mode = "psychic"
idle_threshold_minutes = -5
colour = "blue"

[phase_hours]
morning = [6, 12]
afternoon = [12, 25]
evening = [18, 22]
night = [22, 6]

[models]
fast = "m"
medium = "m"
""")
    errors = settings_errors(tmp_path)
    expected = [("timezone", "'Mars/Olympus_Mons'"), ("daily_budget_usd", "-2"), ("llm_mode", "'psychic'"),
                ("idle_threshold_minutes", "-5"), ("colour", ""), ("phase_hours", "(12, 25)"),
                ("models.medium", "'medium'")]
    for field, bad in expected:
        assert any(f"field '{field}" in e and bad in e for e in errors), (field, errors)
    # A key that is no setting is named, its value not echoed (it may be a secret in the wrong place).
    assert not any("'blue'" in e for e in errors), errors
    assert len(errors) == len(expected), errors
    assert all(e.startswith(f"{config}: ") for e in errors)


ALL_SHARES = "".join(f"{k} = {v}\n" for k, v in DEFAULT_SHARES.items())


def test_category_shares_summing_over_one(tmp_path):
    write_toml(tmp_path, "[category_shares]\n" + ALL_SHARES.replace("research = 0.25", "research = 0.45"))
    errors = settings_errors(tmp_path, CASS_TIMEZONE="Nowhere/Special")
    assert any("field 'category_shares'" in e and "at most 1" in e and "1.200" in e for e in errors), errors
    assert any("CASS_TIMEZONE" in e and "'Nowhere/Special'" in e for e in errors), errors
    assert len(errors) == 2


def test_category_shares_must_list_every_category(tmp_path):
    """Leaving a category out would silently give it no budget (creative work never scheduled)."""
    write_toml(tmp_path, "[category_shares]\nresearch = 0.7\ncreative = 0.5\n")
    errors = settings_errors(tmp_path)
    assert len(errors) == 1 and "field 'category_shares'" in errors[0]
    assert "missing categories ['system', 'journal', 'memory', 'reflection', 'growth', 'curiosity']" in errors[0]
    assert "1.200" in errors[0]   # and the sum, in the same pass
    write_toml(tmp_path, "[category_shares]\n" + ALL_SHARES.replace("creative = 0.1", "creative = 0"))
    s = load_settings(env_for(tmp_path))
    assert s.category_limit("creative") == 0 and s.category_limit("research") == pytest.approx(1.25)


@pytest.mark.parametrize("line, bad", [("creative2 = 0.1", "'creative2'"), ("memory = -0.1", "-0.1"),
                                       ("memory = 1.5", "1.5")])
def test_category_shares_unknown_category_or_share_out_of_range(tmp_path, line, bad):
    key = line.split(" ")[0]
    rest = "".join(x for x in ALL_SHARES.splitlines(keepends=True) if not x.startswith(key + " "))
    write_toml(tmp_path, "[category_shares]\n" + rest + line + "\n")
    errors = settings_errors(tmp_path)
    assert len(errors) == 1 and "category_shares" in errors[0] and bad in errors[0], errors


def test_models_table_naming_one_tier_keeps_the_other_default(tmp_path):
    write_toml(tmp_path, '[models]\nfast = "my-fast-model"\n')
    assert load_settings(env_for(tmp_path)).models == {"fast": "my-fast-model", "deep": "claude-sonnet-5-5"}


def test_phase_hours_report_every_problem(tmp_path):
    write_toml(tmp_path, "[phase_hours]\nmorning = [6, 12]\nafternoon = [13, 18]\nevening = [18, 18]\n"
                         "night = [22, 5]\n")
    errors = settings_errors(tmp_path)
    assert len(errors) == 1 and "field 'phase_hours'" in errors[0]
    for problem in ("evening: hours must be 0-23 and differ, got (18, 18)",
                    "morning ends at 12 but afternoon starts at 13",
                    "night ends at 5 but morning starts at 6"):
        assert problem in errors[0], errors


def test_phase_hours_must_name_every_phase(tmp_path):
    write_toml(tmp_path, "[phase_hours]\nmorning = [6, 12]\nafternoon = [12, 6]\n")
    errors = settings_errors(tmp_path)
    assert len(errors) == 1 and "must define exactly the phases" in errors[0]


def test_reserve_must_be_below_the_daily_budget(tmp_path):
    write_toml(tmp_path, "reserve_usd = 0.5\n")
    errors = settings_errors(tmp_path, CASS_DAILY_BUDGET_USD="0.4")
    assert len(errors) == 1 and "reserve_usd (0.5)" in errors[0] and "daily_budget_usd (0.4)" in errors[0]


def test_environment_errors_name_the_variable_and_value(tmp_path):
    errors = settings_errors(tmp_path, CASS_DAILY_BUDGET_USD="lots", CASS_LLM="maybe")
    assert any(e.startswith("CASS_DAILY_BUDGET_USD: field 'daily_budget_usd'") and "'lots'" in e for e in errors)
    assert any(e.startswith("CASS_LLM: field 'llm_mode'") and "'maybe'" in e for e in errors)
    assert len(errors) == 2


def test_bad_toml_names_the_file_and_line(tmp_path):
    config = write_toml(tmp_path, 'timezone = "UTC"\ndaily_budget_usd = [5.0,\nllm_mode = "offline"\n')
    errors = settings_errors(tmp_path)
    assert len(errors) == 1 and errors[0].startswith(f"{config}: invalid TOML") and "line 3" in errors[0]


def test_non_utf8_toml(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "cass.toml").write_bytes(b'timezone = "\xff"\n')
    errors = settings_errors(tmp_path)
    assert len(errors) == 1 and "not UTF-8" in errors[0]


def test_settings_are_immutable(tmp_path):
    s = load_settings(env_for(tmp_path))
    with pytest.raises(Exception):
        s.daily_budget_usd = 100  # type: ignore[misc]


# --- phase windows in the configured timezone --------------------------------------------------------

def _settings(tz: str = "UTC", **kw) -> Settings:
    return Settings(home=Path("/unused"), timezone=tz, **kw)


def test_phase_windows_cover_the_day_and_night_belongs_to_its_start_date():
    s = _settings("Europe/Berlin")
    d = date(2026, 3, 10)
    start, end = phase_window(d, "night", s)
    assert (start.date(), start.hour, end.date(), end.hour) == (d, 22, date(2026, 3, 11), 6)
    # 03:00 local on the 11th is still the night of the 10th; 06:00 is the morning of the 11th.
    assert phase_at(datetime(2026, 3, 11, 3, 0, tzinfo=s.tz), s) == (d, "night")
    assert phase_at(datetime(2026, 3, 11, 6, 0, tzinfo=s.tz), s) == (date(2026, 3, 11), "morning")
    # A UTC moment is placed in the agent's local phase: 11:30 UTC is 12:30 in Berlin (UTC+1 in March).
    assert phase_at(datetime(2026, 3, 10, 11, 30, tzinfo=timezone.utc), s) == (d, "afternoon")
    first, last = day_bounds(d, s)
    assert first == phase_window(d, "morning", s)[0] and last == end


def test_phase_at_follows_configured_hours():
    s = _settings(phase_hours={"morning": (5, 11), "afternoon": (11, 17), "evening": (17, 23), "night": (23, 5)})
    assert phase_at(datetime(2026, 5, 1, 22, 30, tzinfo=timezone.utc), s) == (date(2026, 5, 1), "evening")
    assert phase_at(datetime(2026, 5, 1, 4, 59, tzinfo=timezone.utc), s) == (date(2026, 4, 30), "night")


def test_remaining_phases_in_order():
    assert remaining_phases(date(2026, 1, 1), "afternoon") == ["afternoon", "evening", "night"]
    assert remaining_phases(date(2026, 1, 1), "morning") == list(PHASES)


def test_default_shares_sum_to_at_most_one():
    assert sum(DEFAULT_SHARES.values()) <= 1.0 + 1e-9
