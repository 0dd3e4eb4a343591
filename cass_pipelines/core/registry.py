"""The action registry and work templates: loaded from one JSON file and validated as a whole.

Every problem is collected (not just the first) and names the file, the action or template, and
the field, so the code location refuses to load with a message a person can act on.
"""
from __future__ import annotations

import importlib
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cass_pipelines.core.categories import PHASES, Category, ModelTier, Priority
from cass_pipelines.core.errors import shown

DEFAULT_REGISTRY_FILE = Path(__file__).resolve().parent.parent / "data" / "definitions.json"
_ACTION_ID = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
_TEMPLATE_ID = re.compile(r"^[a-z][a-z0-9_]*$")
# Not a registry action: the ledger's action id for the work-summary call made after every unit.
SUMMARY_ACTION_ID = "summary.work_unit"
SUMMARY_ESTIMATE_USD = 0.004   # until the ledger has history for it
# Handlers come from this package, or from module prefixes a user lists in `handler_modules`.
HANDLER_PACKAGE = "cass_pipelines.core.handlers"
# Stated maxima of an action: finite and bounded, so a typo cannot reserve or wait without limit.
MAX_ACTION_COST_USD = 100.0
MAX_OUTPUT_TOKENS = 128_000
MAX_DURATION_MINUTES = 24 * 60
MAX_SEQUENCE_LENGTH = 12   # actions per template: each is a wave of Dagster steps
MAX_REGISTRY_BYTES = 16 * 1024 * 1024


class RegistryError(ValueError):
    """The registry file is unusable; `errors` lists every problem found."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("invalid action registry:\n  " + "\n  ".join(errors))


class ActionDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: str
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    category: Category
    handler: str
    estimated_cost_usd: float = Field(ge=0, le=MAX_ACTION_COST_USD)
    default_duration_minutes: int = Field(gt=0, le=MAX_DURATION_MINUTES)
    priority: Priority = Priority.NORMAL
    requires_idle: bool = False
    model_tier: ModelTier = ModelTier.NONE
    requires_approval: bool = False
    max_output_tokens: int = Field(default=1500, gt=0, le=MAX_OUTPUT_TOKENS)

    @field_validator("id")
    @classmethod
    def _dotted(cls, v: str) -> str:
        if not _ACTION_ID.match(v):
            raise ValueError("must be dotted 'family.verb' in lower case")
        return v

    @field_validator("handler")
    @classmethod
    def _import_path(cls, v: str) -> str:
        if ":" not in v:
            raise ValueError("must be an import path 'package.module:function'")
        return v

    @property
    def family(self) -> str:
        return self.id.split(".", 1)[0]


class TemplateDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: str
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    category: Category
    action_sequence: tuple[str, ...] = Field(min_length=1, max_length=MAX_SEQUENCE_LENGTH)
    # Phase -> preference weight in (0, 1]; a phase not listed is not allowed for the template.
    preferred_phases: dict[str, float] = Field(min_length=1)
    priority: Priority = Priority.NORMAL
    requires_idle: bool = False
    # False for work that its own job runs (the daily journal): never offered to the planner.
    plannable: bool = True
    # Planned like other work, but waits in `awaiting_approval` until a person approves it.
    requires_approval: bool = False

    @field_validator("id")
    @classmethod
    def _snake(cls, v: str) -> str:
        if not _TEMPLATE_ID.match(v):
            raise ValueError("must be snake_case")
        return v

    @field_validator("preferred_phases")
    @classmethod
    def _phases(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [p for p in v if p not in PHASES]
        if bad:
            raise ValueError(f"unknown phase(s) {bad}; expected some of {list(PHASES)}")
        if any(not (0 < w <= 1) for w in v.values()):
            raise ValueError("weights must be in (0, 1]")
        return v


class Registry(BaseModel):
    """Actions and templates in force. Template cost and duration derive from their actions."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    source: str
    actions: dict[str, ActionDef]
    templates: dict[str, TemplateDef]

    def template_actions(self, template_id: str) -> list[ActionDef]:
        return [self.actions[a] for a in self.templates[template_id].action_sequence]

    def template_cost(self, template_id: str, action_costs: dict[str, float] | None = None) -> float:
        """Estimated cost of one unit; `action_costs` (calibrated from the ledger) wins over the registry."""
        costs = action_costs or {}
        return round(sum(costs.get(a.id, a.estimated_cost_usd) for a in self.template_actions(template_id)), 6)

    def template_duration(self, template_id: str) -> int:
        return sum(a.default_duration_minutes for a in self.template_actions(template_id))

    def templates_for_phase(self, phase: str) -> list[TemplateDef]:
        return [t for t in self.templates.values() if t.plannable and phase in t.preferred_phases]

    @cached_property
    def max_sequence_length(self) -> int:
        return max(len(t.action_sequence) for t in self.templates.values())


def handler_allowed(path: str, handler_modules: tuple[str, ...] = ()) -> bool:
    """Only the project's handler package and the module prefixes a user listed (never `sys:exit`)."""
    module_name = path.partition(":")[0]
    return any(module_name == prefix or module_name.startswith(prefix + ".")
               for prefix in (HANDLER_PACKAGE, *handler_modules))


def resolve_handler(path: str) -> Callable:
    module_name, _, attr = path.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, attr)
    if not callable(fn):
        raise TypeError(f"{path} is not callable")
    return fn


def _pydantic_errors(where: str, exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(object)"
        value = err.get("input")
        got = "" if isinstance(value, dict) else f" (got {shown(value)})"
        out.append(f"{where}: field '{field}': {err['msg']}{got}")
    return out


def check_registry_data(data: object, source: str,
                        handler_modules: tuple[str, ...] = ()) -> tuple[Registry | None, list[str]]:
    """Validate parsed registry JSON; returns the registry (None if any error) and every error."""
    errors: list[str] = []
    if not isinstance(data, dict) or not isinstance(data.get("actions"), list) or not isinstance(
        data.get("templates"), list
    ):
        return None, [f"{source}: top level must be an object with lists 'actions' and 'templates'"]

    actions: dict[str, ActionDef] = {}
    invalid_actions: set[str] = set()   # present in the file but failing validation (reported once, there)
    for i, raw in enumerate(data["actions"]):
        ident = raw.get("id") if isinstance(raw, dict) else None
        where = f"{source}: action {shown(ident)}" if isinstance(ident, str) and ident else f"{source}: actions[{i}]"
        try:
            action = ActionDef.model_validate(raw)
        except ValidationError as exc:
            errors.extend(_pydantic_errors(where, exc))
            if isinstance(ident, str):
                invalid_actions.add(ident)
            continue
        if action.id in actions:
            errors.append(f"{where}: field 'id': duplicate action id (actions[{i}])")
            continue
        if not handler_allowed(action.handler, handler_modules):
            errors.append(f"{where}: field 'handler': {shown(action.handler)} is outside the handler modules; "
                          f"allowed: {', '.join((HANDLER_PACKAGE, *handler_modules))} (add a module prefix to "
                          "handler_modules in cass.toml to use your own)")
        else:
            try:
                resolve_handler(action.handler)
            except Exception as exc:  # any import problem is a registry error, reported with the path
                errors.append(f"{where}: field 'handler': cannot import {shown(action.handler)}: {exc}")
        actions[action.id] = action

    templates: dict[str, TemplateDef] = {}
    for i, raw in enumerate(data["templates"]):
        ident = raw.get("id") if isinstance(raw, dict) else None
        where = (f"{source}: template {shown(ident)}" if isinstance(ident, str) and ident
                 else f"{source}: templates[{i}]")
        # The action references are checked even when other fields are invalid, so one pass shows all.
        sequence = raw.get("action_sequence") if isinstance(raw, dict) else None
        if isinstance(sequence, (list, tuple)):
            for pos, action_id in enumerate(sequence):
                if not isinstance(action_id, str) or action_id in actions:
                    continue
                if action_id in invalid_actions:
                    errors.append(f"{where}: field 'action_sequence[{pos}]': action {shown(action_id)} is invalid "
                                  f"(see its errors)")
                else:
                    errors.append(f"{where}: field 'action_sequence[{pos}]': unknown action {shown(action_id)}")
        try:
            template = TemplateDef.model_validate(raw)
        except ValidationError as exc:
            errors.extend(_pydantic_errors(where, exc))
            continue
        if template.id in templates:
            errors.append(f"{where}: field 'id': duplicate template id (templates[{i}])")
            continue
        # A template needs idle if it says so or any of its actions does: one flag for the planner.
        if any(actions[a].requires_idle for a in template.action_sequence if a in actions):
            template = template.model_copy(update={"requires_idle": True})
        templates[template.id] = template

    if not templates and not errors:
        errors.append(f"{source}: no templates defined")
    if errors:
        return None, errors
    return Registry(source=source, actions=actions, templates=templates), []


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number (JSON has no Infinity or NaN)")


def read_registry_file(path: Path, handler_modules: tuple[str, ...] = ()) -> tuple[Registry | None, list[str]]:
    try:
        if not path.is_file():
            reason = "no such file" if not path.exists() else "not a regular file (a directory or device)"
            return None, [f"{path}: cannot read: {reason}"]
        if path.stat().st_size > MAX_REGISTRY_BYTES:
            return None, [f"{path}: larger than {MAX_REGISTRY_BYTES} bytes; not an action registry"]
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [f"{path}: cannot read: {exc.strerror}"]
    except UnicodeDecodeError as exc:
        return None, [f"{path}: byte {exc.start}: not UTF-8: {exc.reason}"]
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        return None, [f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"]
    except ValueError as exc:
        return None, [f"{path}: invalid JSON: {exc}"]
    except RecursionError:
        return None, [f"{path}: invalid registry: JSON nested too deeply (a registry is two levels of objects)"]
    return check_registry_data(data, str(path), handler_modules)


def load_registry(path: Path | str | None = None, handler_modules: tuple[str, ...] = ()) -> Registry:
    registry, errors = read_registry_file(Path(path) if path else DEFAULT_REGISTRY_FILE, handler_modules)
    if errors:
        raise RegistryError(errors)
    assert registry is not None
    return registry
