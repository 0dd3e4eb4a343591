"""The persona file: who the agent is. Another agent is another file, not a code change."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

SAMPLE_PERSONA_FILE = Path(__file__).resolve().parent.parent / "data" / "cass_persona.json"


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


Text = Annotated[str, AfterValidator(_not_blank)]   # what the agent's prompts quote: some words, not spaces


class GrowthEdgeSeed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    area: Text
    current_state: str
    desired_state: str
    weight: float = Field(default=0.5, ge=0, le=1)


class QuestionSeed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    question: Text
    context: str = ""


class Persona(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: Text
    voice: Text
    identity: list[Text] = Field(min_length=1)
    values: list[Text] = Field(min_length=1)
    growth_edges: list[GrowthEdgeSeed] = Field(default_factory=list)
    open_questions: list[QuestionSeed] = Field(default_factory=list)

    @field_validator("growth_edges", "open_questions")
    @classmethod
    def ids_unique(cls, seeds: list) -> list:
        first: dict[str, int] = {}
        for n, seed in enumerate(seeds):
            if seed.id in first:   # (stored by id: the second would be dropped silently)
                raise ValueError(f"id '{seed.id}' appears twice (items {first[seed.id]} and {n})")
            first[seed.id] = n
        return seeds


MAX_PERSONA_BYTES = 1024 * 1024


def load_persona(path: Path = SAMPLE_PERSONA_FILE) -> Persona:
    if path.exists() and not path.is_file():   # a directory or a device such as /dev/zero is never read
        raise ValueError(f"{path}: not a regular file")
    try:
        if path.stat().st_size > MAX_PERSONA_BYTES:
            raise ValueError(f"{path}: larger than {MAX_PERSONA_BYTES} bytes; not a persona file")
        return Persona.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: byte {exc.start}: not UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise ValueError(f"{path}: invalid persona: JSON nested too deeply") from None
    except ValidationError as exc:
        problems = "; ".join(f"field '{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: {problems}") from None
