"""The action registry and work templates: the shipped file, and every validation rule.

Each broken registry is written to a file and read back through `read_registry_file` / `load_registry`
(what the code location and `cass-pipelines validate` use), so messages are checked as users see them:
file, action or template, field.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from cass_pipelines.config.registry import DEFAULT_REGISTRY_FILE, RegistryError, load_registry, read_registry_file
from cass_pipelines.domain.categories import Category, ModelTier, Priority
from cass_pipelines.domain.registry import REQUIRED_TEMPLATES


@pytest.fixture(scope="module")
def shipped() -> dict:
    return json.loads(DEFAULT_REGISTRY_FILE.read_text(encoding="utf-8"))


@pytest.fixture
def data(shipped: dict) -> dict:
    return copy.deepcopy(shipped)


def write(tmp_path: Path, data: object, name: str = "actions.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def errors_for(tmp_path: Path, data: object) -> tuple[Path, list[str]]:
    path = write(tmp_path, data)
    registry, errors = read_registry_file(path)
    assert registry is None, "a registry with errors must not be returned"
    return path, errors


def action(data: dict, action_id: str) -> dict:
    return next(a for a in data["actions"] if a["id"] == action_id)


def template(data: dict, template_id: str) -> dict:
    return next(t for t in data["templates"] if t["id"] == template_id)


def about(errors: list[str], path: Path, who: str) -> list[str]:
    """The errors whose subject is `who` ("action 'x'" or "template 'y'")."""
    return [e for e in errors if e.startswith(f"{path}: {who}:")]


# --- the shipped registry ---------------------------------------------------------------------------

def test_shipped_registry_loads_with_required_actions_and_templates():
    reg = load_registry()
    assert len(reg.actions) >= 35 and len(reg.templates) >= 15
    families = {a.family for a in reg.actions.values()}
    assert {"session", "journal", "dream", "memory", "rhythm", "self", "wiki", "research", "world",
            "system"} <= families
    for required in ("session.reflection", "session.synthesis", "session.meta_reflection",
                     "session.consolidation", "session.growth_edge", "session.curiosity",
                     "session.world_state", "session.research", "session.knowledge_building",
                     "session.writing", "session.creative", "session.user_synthesis",
                     "journal.generate_daily", "dream.nightly", "memory.summarize_conversation",
                     "memory.summarize_idle_conversations", "memory.generate_conversation_title",
                     "rhythm.generate_phase_summary", "rhythm.generate_daily_narrative",
                     "self.add_observation", "self.record_insight", "self.update_growth_edge",
                     "self.add_open_question", "wiki.create_note", "wiki.update_note",
                     "research.run_single", "research.run_batch", "research.refresh_queue",
                     "system.queue_maintenance"):
        assert required in reg.actions, required
    for a in reg.actions.values():
        assert isinstance(a.category, Category) and isinstance(a.priority, Priority)
        assert isinstance(a.model_tier, ModelTier) and a.estimated_cost_usd >= 0
    # Creative work is both an action category and a template category (the old scheduler's gap).
    assert any(t.category == Category.CREATIVE for t in reg.templates.values())


def test_shipped_registry_has_no_runner_key(shipped: dict):
    assert "runner_key" not in DEFAULT_REGISTRY_FILE.read_text(encoding="utf-8")
    assert all("runner_key" not in a for a in shipped["actions"])


def test_template_cost_and_duration_derive_from_its_actions():
    reg = load_registry()
    for t in reg.templates.values():
        acts = [reg.actions[a] for a in t.action_sequence]
        assert reg.template_cost(t.id) == pytest.approx(sum(a.estimated_cost_usd for a in acts))
        assert reg.template_duration(t.id) == sum(a.default_duration_minutes for a in acts)
    # A calibrated cost for one action changes every template that uses it, nothing else.
    t = next(iter(reg.templates.values()))
    first = t.action_sequence[0]
    assert reg.template_cost(t.id, {first: reg.actions[first].estimated_cost_usd + 1.0}) == pytest.approx(
        reg.template_cost(t.id) + 1.0 * t.action_sequence.count(first))


def test_templates_for_phase_respects_preferred_phases_and_plannable():
    reg = load_registry()
    for phase in ("morning", "afternoon", "evening", "night"):
        offered = reg.templates_for_phase(phase)
        assert offered, phase
        assert all(phase in t.preferred_phases and t.plannable for t in offered)
    not_plannable = [t.id for t in reg.templates.values() if not t.plannable]
    assert "daily_journal" in not_plannable



def test_only_work_that_is_whatever_is_pending_now_is_superseded_by_a_later_unit():
    """`reoffer: latest` marks templates whose unit does what is pending when it runs (catch-ups, summarising,
    upkeep, the world's news): a later unit of one does a waiting one's work. Work of its own focus keeps
    the default and waits to be offered again."""
    from cass_pipelines.domain.categories import Reoffer

    reg = load_registry()
    latest = {t.id for t in reg.templates.values() if t.reoffer == Reoffer.LATEST}
    assert latest == {"conversation_catchup", "memory_consolidation", "system_maintenance", "world_check_in"}
    assert reg.templates["morning_reflection"].reoffer == Reoffer.OWN

# --- one rule at a time -------------------------------------------------------------------------------

def test_unknown_action_in_template(tmp_path, data):
    template(data, "synthesis")["action_sequence"].append("session.vanished")
    path, errors = errors_for(tmp_path, data)
    assert len(errors) == 1
    assert str(path) in errors[0] and "template 'synthesis'" in errors[0]
    assert "action_sequence[3]" in errors[0] and "unknown action 'session.vanished'" in errors[0]


def test_empty_action_sequence(tmp_path, data):
    template(data, "synthesis")["action_sequence"] = []
    path, errors = errors_for(tmp_path, data)
    assert len(errors) == 1
    assert str(path) in errors[0] and "template 'synthesis'" in errors[0]
    assert "field 'action_sequence'" in errors[0] and "at least 1" in errors[0]


def test_duplicate_action_id(tmp_path, data):
    data["actions"].append(copy.deepcopy(action(data, "wiki.create_note")))
    path, errors = errors_for(tmp_path, data)
    assert len(errors) == 1
    assert str(path) in errors[0] and "action 'wiki.create_note'" in errors[0]
    assert "field 'id'" in errors[0] and "duplicate" in errors[0]


def test_duplicate_template_id(tmp_path, data):
    data["templates"].append(copy.deepcopy(template(data, "synthesis")))
    path, errors = errors_for(tmp_path, data)
    assert len(errors) == 1
    assert str(path) in errors[0] and "template 'synthesis'" in errors[0]
    assert "field 'id'" in errors[0] and "duplicate" in errors[0]


def test_unknown_action_category(tmp_path, data):
    action(data, "session.creative")["category"] = "creative2"
    path, errors = errors_for(tmp_path, data)
    own = about(errors, path, "action 'session.creative'")
    assert len(own) == 1
    assert str(path) in own[0] and "field 'category'" in own[0] and "'creative2'" in own[0]
    # The template using it is told the action is invalid, not that it is missing.
    refs = about(errors, path, "template 'creative_session'")
    assert len(refs) == 1 and "session.creative" in refs[0] and "invalid" in refs[0]
    assert not any("unknown action 'session.creative'" in e for e in errors)


def test_unknown_template_category(tmp_path, data):
    template(data, "creative_session")["category"] = "creative2"
    path, errors = errors_for(tmp_path, data)
    assert len(errors) == 1
    assert str(path) in errors[0] and "template 'creative_session'" in errors[0]
    assert "field 'category'" in errors[0] and "'creative2'" in errors[0]


def test_negative_cost(tmp_path, data):
    action(data, "session.writing")["estimated_cost_usd"] = -0.01
    path, errors = errors_for(tmp_path, data)
    own = about(errors, path, "action 'session.writing'")
    assert len(own) == 1
    assert str(path) in own[0] and "field 'estimated_cost_usd'" in own[0] and "-0.01" in own[0]


@pytest.mark.parametrize("handler, why", [
    ("cass_pipelines.services.handlers.no_such_module:run", "No module named"),
    ("cass_pipelines.services.handlers.sessions:no_such_function", "no_such_function"),
    ("cass_pipelines.services.handlers.base:ARTIFACT_TABLES", "not callable"),
    ("sys:exit", "outside the handler modules"),
    ("cass_pipelines.config.registry:resolve_handler", "outside the handler modules"),
    ("no_colon_here", "import path"),
])
def test_handler_that_does_not_import(tmp_path, data, handler, why):
    action(data, "dream.nightly")["handler"] = handler
    path, errors = errors_for(tmp_path, data)
    own = about(errors, path, "action 'dream.nightly'")
    assert len(own) == 1
    assert str(path) in own[0] and "field 'handler'" in own[0] and why in own[0]


def test_unknown_phase(tmp_path, data):
    template(data, "synthesis")["preferred_phases"] = {"morning": 1.0, "noon": 0.5}
    path, errors = errors_for(tmp_path, data)
    assert len(errors) == 1
    assert str(path) in errors[0] and "template 'synthesis'" in errors[0]
    assert "field 'preferred_phases'" in errors[0] and "noon" in errors[0]


def test_phase_weight_out_of_range(tmp_path, data):
    template(data, "synthesis")["preferred_phases"] = {"morning": 1.5}
    _, errors = errors_for(tmp_path, data)
    assert len(errors) == 1 and "preferred_phases" in errors[0] and "(0, 1]" in errors[0]



def test_a_bad_reoffer_value_names_the_file_and_the_template(tmp_path, data):
    template(data, "conversation_catchup")["reoffer"] = "newest"
    path, errors = errors_for(tmp_path, data)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{path}: template 'conversation_catchup': field 'reoffer'")
    assert "'own' or 'latest'" in errors[0] and "(got 'newest')" in errors[0]

def test_unknown_field_is_rejected(tmp_path, data):
    action(data, "session.reflection")["runner_key"] = "reflection"
    path, errors = errors_for(tmp_path, data)
    own = about(errors, path, "action 'session.reflection'")
    assert len(own) == 1 and "field 'runner_key'" in own[0] and "Extra inputs" in own[0]


def test_action_id_must_be_dotted(tmp_path, data):
    data["actions"].append({**action(data, "wiki.create_note"), "id": "WikiCreate"})
    _, errors = errors_for(tmp_path, data)
    assert len(errors) == 1 and "action 'WikiCreate'" in errors[0] and "family.verb" in errors[0]


def test_missing_required_field_names_position_when_there_is_no_id(tmp_path, data):
    broken = copy.deepcopy(action(data, "wiki.create_note"))
    del broken["id"]
    data["actions"].append(broken)
    _, errors = errors_for(tmp_path, data)
    index = len(data["actions"]) - 1
    assert len(errors) == 1 and f"actions[{index}]" in errors[0] and "field 'id'" in errors[0]


def test_bad_json_reports_line_and_column(tmp_path):
    path = tmp_path / "actions.json"
    path.write_text('{\n  "actions": [],\n  "templates": [,]\n}\n', encoding="utf-8")
    registry, errors = read_registry_file(path)
    assert registry is None and len(errors) == 1
    assert str(path) in errors[0] and "line 3 column 17" in errors[0] and "invalid JSON" in errors[0]


def test_non_utf8_file(tmp_path):
    path = tmp_path / "actions.json"
    path.write_bytes(b'{"actions": [], "templates": ["\xff"]}')
    registry, errors = read_registry_file(path)
    assert registry is None and len(errors) == 1 and str(path) in errors[0] and "UTF-8" in errors[0]


def test_missing_file(tmp_path):
    registry, errors = read_registry_file(tmp_path / "nope.json")
    assert registry is None and len(errors) == 1 and "nope.json" in errors[0] and "cannot read" in errors[0]


@pytest.mark.parametrize("top", [[], {"actions": []}, {"actions": {}, "templates": []}, "text"])
def test_wrong_top_level_shape(tmp_path, top):
    _, errors = errors_for(tmp_path, top)
    assert len(errors) == 1 and "'actions' and 'templates'" in errors[0]


def test_registry_without_templates(tmp_path, data):
    data["templates"] = []
    _, errors = errors_for(tmp_path, data)
    assert errors == [f"{tmp_path / 'actions.json'}: no templates defined"]


# --- everything at once ----------------------------------------------------------------------------

def test_every_error_is_reported_in_one_pass(tmp_path, data):
    template(data, "morning_reflection")["action_sequence"].append("session.vanished")
    template(data, "meta_reflection")["action_sequence"] = []
    data["actions"].append(copy.deepcopy(action(data, "wiki.update_note")))
    data["templates"].append(copy.deepcopy(template(data, "world_check_in")))
    action(data, "session.creative")["category"] = "creative2"
    action(data, "session.writing")["estimated_cost_usd"] = -1
    action(data, "dream.nightly")["handler"] = "cass_pipelines.nowhere:dream"
    template(data, "synthesis")["preferred_phases"] = {"dusk": 1.0}
    # A template with two problems of its own: both are reported.
    template(data, "knowledge_building")["category"] = "creative2"
    template(data, "knowledge_building")["action_sequence"].append("wiki.vanished")

    path = write(tmp_path, data)
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    errors = info.value.errors
    expected = [
        ("template 'morning_reflection'", "unknown action 'session.vanished'"),
        ("template 'meta_reflection'", "field 'action_sequence'"),
        ("action 'wiki.update_note'", "duplicate action id"),
        ("template 'world_check_in'", "duplicate template id"),
        ("action 'session.creative'", "'creative2'"),
        ("template 'creative_session'", "action 'session.creative' is invalid"),
        ("action 'session.writing'", "field 'estimated_cost_usd'"),
        ("template 'writing_session'", "action 'session.writing' is invalid"),
        ("action 'dream.nightly'", "field 'handler'"),
        ("template 'synthesis'", "dusk"),
        ("template 'knowledge_building'", "field 'category'"),
        ("template 'knowledge_building'", "unknown action 'wiki.vanished'"),
    ]
    for who, what in expected:
        assert any(what in e for e in about(errors, path, who)), (who, what, errors)
    assert len(errors) == len(expected), errors
    assert all(e.startswith(str(path)) for e in errors)
    # The exception text (what a failed code-location load shows) carries every line too.
    assert all(e in str(info.value) for e in errors)


def test_load_registry_from_a_users_file(tmp_path, data):
    """A user's own registry with the same checks: a smaller valid file loads as itself (with the
    templates the jobs run by name)."""
    kept = [template(data, t) for t in ("creative_session", *REQUIRED_TEMPLATES)]
    data["templates"] = kept
    data["actions"] = [action(data, a) for a in dict.fromkeys(a for t in kept for a in t["action_sequence"])]
    reg = load_registry(write(tmp_path, data, "mine.json"))
    assert list(reg.templates) == ["creative_session", *REQUIRED_TEMPLATES] and list(reg.actions) == [
        a["id"] for a in data["actions"]]
    assert reg.source.endswith("mine.json")


def test_a_handler_module_prefix_listed_in_settings_is_allowed(tmp_path, data):
    """Handlers outside cass_pipelines.services.handlers need their module prefix in `handler_modules`."""
    action(data, "dream.nightly")["handler"] = "json:dumps"
    path = write(tmp_path, data)
    _, refused = read_registry_file(path)
    assert any("'json:dumps' is outside the handler modules" in e for e in refused)
    registry, errors = read_registry_file(path, handler_modules=("json",))
    assert errors == [] and registry.actions["dream.nightly"].handler == "json:dumps"
    _, lookalike = read_registry_file(path, handler_modules=("js",))   # a prefix is a whole module name
    assert any("outside the handler modules" in e for e in lookalike)
