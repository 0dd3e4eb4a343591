"""The setup commands as users run them: init [--sample], validate (text and --json, exit codes, a user's
registry via CASS_ACTIONS_FILE), catalog."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from support import NOW

from cass_pipelines.cli.main import main
from cass_pipelines.config.registry import DEFAULT_REGISTRY_FILE, load_registry
from cass_pipelines.config.settings import load_settings
from cass_pipelines.domain.registry import REQUIRED_TEMPLATES
from cass_pipelines.store.db import Store

CLI = str(Path(sys.executable).parent / "cass-pipelines")


def run_json(capsys, *args: str) -> tuple[int, dict]:
    code = main([*args, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def bad_registry(tmp_path: Path) -> Path:
    """The shipped registry with a template naming a missing action and an action in category creative2."""
    data = json.loads(DEFAULT_REGISTRY_FILE.read_text(encoding="utf-8"))
    next(t for t in data["templates"] if t["id"] == "synthesis")["action_sequence"].append("wiki.vanished")
    next(a for a in data["actions"] if a["id"] == "session.curiosity")["category"] = "creative2"
    path = tmp_path / "broken_actions.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


# --- init -------------------------------------------------------------------------------------------

def test_init_creates_home_config_and_schema_and_is_idempotent(cass_env, capsys):
    home = Path(cass_env["CASS_HOME"])
    code, out = run_json(capsys, "init")
    assert code == 0
    assert Path(out["home"]) == home and (home / "cass.toml").is_file() and (home / "cass.duckdb").is_file()
    assert out["migrations_applied"] and "persona" not in out and "import" not in out
    (home / "cass.toml").write_text((home / "cass.toml").read_text() + "\n# my edit\n", encoding="utf-8")
    code, again = run_json(capsys, "init")
    assert code == 0 and again["migrations_applied"] == []
    assert "# my edit" in (home / "cass.toml").read_text()     # init never overwrites the user's settings


def test_init_writes_the_configured_timezone(cass_env, monkeypatch, capsys):
    monkeypatch.setenv("CASS_TIMEZONE", "Pacific/Auckland")
    assert main(["init"]) == 0
    capsys.readouterr()
    monkeypatch.delenv("CASS_TIMEZONE")
    assert load_settings().timezone == "Pacific/Auckland"


def test_init_sample_loads_persona_and_conversations(cass_env, capsys):
    code, out = run_json(capsys, "init", "--sample")
    assert code == 0 and out["persona"] == "Cass"
    assert out["import"]["conversations_added"] >= 50 and out["import"]["bad_lines"] == []
    settings = load_settings()
    store = Store(settings.db_path)
    persona = store.one('SELECT name, identity, "values" FROM persona')
    assert persona["name"] == "Cass" and json.loads(persona["identity"]) and json.loads(persona["values"])
    assert store.scalar("SELECT count(*) FROM growth_edges") >= 1
    assert store.scalar("SELECT count(*) FROM open_questions") >= 1
    days = store.all("SELECT DISTINCT CAST(timezone(?, created_at) AS DATE) AS d FROM messages ORDER BY d",
                     [settings.timezone])
    assert len(days) >= 7
    # The sample is shifted so its last day is yesterday in the agent's timezone: idle, not yet summarised.
    last_day = days[-1]["d"]
    assert last_day + timedelta(days=1) == NOW.astimezone(settings.tz).date()   # the injected today
    idle_unsummarised = store.scalar(
        "SELECT count(*) FROM conversations WHERE summarized_through_at IS NULL AND last_message_at < ?",
        [NOW - timedelta(minutes=settings.idle_threshold_minutes)])
    assert idle_unsummarised >= 1
    # Running it again adds nothing twice.
    code, again = run_json(capsys, "init", "--sample")
    assert code == 0 and again["import"]["messages_added"] == 0 and again["import"]["conversations_added"] == 0
    assert store.scalar("SELECT count(*) FROM persona") == 1


def test_init_text_output(cass_env, capsys):
    assert main(["init", "--sample"]) == 0
    text = capsys.readouterr().out
    assert "CASS_HOME" in text and "persona     Cass" in text and "conversations" in text


# --- validate ---------------------------------------------------------------------------------------

def test_validate_ok_on_the_shipped_registry(cass_env, capsys):
    reg = load_registry()
    code, out = run_json(capsys, "validate")
    assert code == 0
    assert out["ok"] is True and out["errors"] == []
    assert (out["actions"], out["templates"]) == (len(reg.actions), len(reg.templates))
    assert main(["validate"]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {len(reg.actions)} actions, {len(reg.templates)} templates")


def test_validate_fails_on_a_bad_registry_and_names_file_template_action_field(cass_env, bad_registry,
                                                                               monkeypatch, capsys):
    monkeypatch.setenv("CASS_ACTIONS_FILE", str(bad_registry))
    code, out = run_json(capsys, "validate")
    assert code == 2 and out["ok"] is False and out["actions"] == 0 and out["templates"] == 0
    missing = [e for e in out["errors"] if "unknown action 'wiki.vanished'" in e]
    assert len(missing) == 1
    assert str(bad_registry) in missing[0] and "template 'synthesis'" in missing[0]
    assert "field 'action_sequence[" in missing[0]
    category = [e for e in out["errors"] if "'creative2'" in e]
    assert len(category) == 1
    assert str(bad_registry) in category[0] and "action 'session.curiosity'" in category[0]
    assert "field 'category'" in category[0]

    assert main(["validate"]) == 2
    text = capsys.readouterr().out
    assert text.startswith(f"{len(out['errors'])} error(s):")
    assert all(e in text for e in out["errors"])


def test_validate_reports_settings_and_registry_errors_together(cass_env, bad_registry, monkeypatch, capsys):
    """A settings error must not hide the user's registry (it used to fall back to the shipped file)."""
    monkeypatch.setenv("CASS_ACTIONS_FILE", str(bad_registry))
    monkeypatch.setenv("CASS_TIMEZONE", "Atlantis/Capital")
    code, out = run_json(capsys, "validate")
    assert code == 2
    assert any("CASS_TIMEZONE" in e and "'Atlantis/Capital'" in e for e in out["errors"])
    assert any("wiki.vanished" in e for e in out["errors"]) and any("creative2" in e for e in out["errors"])


def test_validate_bad_json_registry(cass_env, tmp_path, monkeypatch, capsys):
    path = tmp_path / "actions.json"
    path.write_text('{"actions": [\n  {"id": "a.b",}\n], "templates": []}\n', encoding="utf-8")
    monkeypatch.setenv("CASS_ACTIONS_FILE", str(path))
    code, out = run_json(capsys, "validate")
    assert code == 2 and len(out["errors"]) == 1 and f"{path}: line 2 column" in out["errors"][0]


def test_validate_console_script_exit_codes(cass_env, bad_registry):
    """The installed `cass-pipelines` command, as a shell or CI would run it."""
    env = {**os.environ}
    ok = subprocess.run([CLI, "validate"], env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    env["CASS_ACTIONS_FILE"] = str(bad_registry)
    bad = subprocess.run([CLI, "validate"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "wiki.vanished" in bad.stdout and "template 'synthesis'" in bad.stdout and str(bad_registry) in bad.stdout


def test_commands_that_need_the_registry_refuse_a_bad_one_cleanly(sample_home, bad_registry, monkeypatch, capsys):
    monkeypatch.setenv("CASS_ACTIONS_FILE", str(bad_registry))
    assert main(["catalog"]) == 2
    err = capsys.readouterr().err
    assert str(bad_registry) in err and "wiki.vanished" in err and "Traceback" not in err


# --- catalog ----------------------------------------------------------------------------------------

def test_catalog_lists_actions_and_templates_with_derived_estimates(sample_home, capsys):
    reg = load_registry()
    code, out = run_json(capsys, "catalog")
    assert code == 0
    assert {a["id"] for a in out["actions"]} == set(reg.actions)
    assert all({"id", "category", "handler", "estimated_cost_usd", "model_tier", "priority"} <= set(a)
               for a in out["actions"])
    costs = {a["id"]: a["estimated_cost_usd"] for a in out["actions"]}
    for t in out["templates"]:
        assert t["action_sequence"] and t["category"]
        assert t["estimated_cost_usd"] == pytest.approx(sum(costs[a] for a in t["action_sequence"]))
    assert main(["catalog"]) == 0
    text = capsys.readouterr().out
    assert "session.creative" in text and "creative_session" in text


def test_catalog_uses_the_users_registry(sample_home, tmp_path, monkeypatch, capsys):
    data = json.loads(DEFAULT_REGISTRY_FILE.read_text(encoding="utf-8"))
    keep = [t for t in data["templates"] if t["id"] in ("creative_session", *REQUIRED_TEMPLATES)]
    used = {a for t in keep for a in t["action_sequence"]}
    data = {"actions": [copy.deepcopy(a) for a in data["actions"] if a["id"] in used], "templates": keep}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    monkeypatch.setenv("CASS_ACTIONS_FILE", str(path))
    code, out = run_json(capsys, "catalog")
    assert code == 0 and sorted(t["id"] for t in out["templates"]) == sorted(["creative_session", *REQUIRED_TEMPLATES])


def test_init_sample_again_on_a_later_day_keeps_the_sample_where_it_is(cass_env, capsys, monkeypatch):
    """The demo is run again on later days: the sample, stored once, is not shifted to the new today (each
    of its lines would be a duplicate of a stored message with other times, reported as a bad line)."""
    from cass_pipelines.domain.clock import NOW_ENV

    code, first = run_json(capsys, "init", "--sample")
    assert code == 0 and first["import"]["messages_added"] > 200
    store = Store(load_settings().db_path)
    stored = store.all("SELECT conversation_id, message_id, created_at FROM messages ORDER BY ALL")
    monkeypatch.setenv(NOW_ENV, (NOW + timedelta(days=3)).isoformat())
    code, again = run_json(capsys, "init", "--sample")
    assert code == 0 and again["import"]["already_loaded"] is True
    assert (again["import"]["messages_added"], again["import"]["bad_line_count"]) == (0, 0)
    assert store.all("SELECT conversation_id, message_id, created_at FROM messages ORDER BY ALL") == stored
    assert main(["init", "--sample"]) == 0
    assert "sample      already loaded (56 conversations)" in capsys.readouterr().out


def test_init_with_a_bad_timezone_does_not_write_it_into_cass_toml(cass_env, monkeypatch, capsys):
    monkeypatch.setenv("CASS_TIMEZONE", "Atlantis/Capital")
    assert main(["init"]) == 2
    assert "'Atlantis/Capital'" in capsys.readouterr().err
    assert not (Path(cass_env["CASS_HOME"]) / "cass.toml").exists()
    monkeypatch.delenv("CASS_TIMEZONE")
    assert main(["init"]) == 0 and load_settings().timezone == "UTC"


def sample_persona_with(**changes) -> str:
    from cass_pipelines.config.persona import SAMPLE_PERSONA_FILE

    return json.dumps({**json.loads(SAMPLE_PERSONA_FILE.read_text(encoding="utf-8")), **changes})


SAMPLE_EDGE = json.loads(sample_persona_with())["growth_edges"][0]


@pytest.mark.parametrize("content, why", [
    (None, "cannot read"), ('{"id": "x"}', "field 'name'"), ("{oops", "invalid JSON"),
    (sample_persona_with(name="   "), "field 'name': Value error, must not be blank"),
    (sample_persona_with(values=["care", " "]), "field 'values.1': Value error, must not be blank"),
    # Stored by id, the second edge would be dropped without a word.
    (sample_persona_with(growth_edges=[SAMPLE_EDGE, {**SAMPLE_EDGE, "area": "another"}]),
     f"field 'growth_edges': Value error, id '{SAMPLE_EDGE['id']}' appears twice (items 0 and 1)")],
    ids=["missing", "no name", "not json", "blank name", "blank value", "edge id twice"])
def test_init_with_a_bad_persona_file_says_why(cass_env, tmp_path, capsys, content, why):
    path = tmp_path / "persona.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert main(["init", "--persona", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and why in err and "Traceback" not in err


def test_init_with_another_persona_file(cass_env, tmp_path, capsys):
    path = tmp_path / "persona.json"
    path.write_text(json.dumps({"id": "wren", "name": "Wren", "voice": "plain", "identity": ["I keep notes."],
                                "values": ["care"], "growth_edges": [], "open_questions": []}), encoding="utf-8")
    code, out = run_json(capsys, "init", "--persona", str(path))
    assert code == 0 and out["persona"] == "Wren" and "import" not in out
    assert Store(load_settings().db_path).scalar("SELECT name FROM persona") == "Wren"
