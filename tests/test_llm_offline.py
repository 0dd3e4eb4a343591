"""The offline backend and the simulator: deterministic, schema-valid, priced like the real model."""
from __future__ import annotations

from typing import Literal, Optional

import anthropic
import pytest
from pydantic import BaseModel, Field, create_model

from cass_pipelines.config.settings import load_settings
from cass_pipelines.llm.base import LLMError, LLMRequest
from cass_pipelines.llm.factory import make_client
from cass_pipelines.llm.offline import OfflineBackend
from cass_pipelines.llm.pricing import load_pricing
from cass_pipelines.llm.simulate import instance, material, seeded

PROMPT = """Today is Thursday. My growth edges:
- Patience with ambiguity: now 'I rush to close questions'; aiming for 'I can stay open'
- Writing plainly: now 'dense'
My open questions:
- What does it mean to remember a conversation I was not present for?
- reflection_block [reflection, normal] $0.012; phases: morning
"""
PREFIX = "I am Cass. " * 800   # long enough to be cacheable for every model


class Edge(BaseModel):
    area: str = Field(min_length=3, max_length=40)
    weight: float = Field(ge=0, le=1)


class Note(BaseModel):
    kind: Literal["insight", "question", "observation"]
    text: str = Field(min_length=20)
    edge: Optional[Edge] = None
    rating: int = Field(gt=0, lt=4)
    share: float = Field(gt=0.5, lt=0.6)
    counts: dict[str, int] = Field(default_factory=dict)


class Report(BaseModel):
    title: str = Field(max_length=30)
    notes: list[Note] = Field(min_length=2, max_length=3)
    tags: list[Literal["a", "b", "c"]] = Field(max_length=3)
    edges: list[Edge] = Field(max_length=1)
    either: Edge | Note
    questions_raised: list[str]


class Pair(BaseModel):          # tuples (prefixItems): fine offline; the SDK cannot send them strictly
    pair: tuple[int, Literal["x", "y"]]


def plan_like_schema() -> type[BaseModel]:
    """Shaped like the decision engine's: per phase, a list of units whose template id is an enum."""
    fields = {"day_intention": (str, ...)}
    for phase, allowed in {"morning": ("reflection_block", "research_batch"), "night": ("journal_entry",)}.items():
        unit = create_model(f"{phase}Unit", template_id=(Literal[allowed], ...), focus=(str, ...),
                            motivation=(str, ...))
        fields[phase] = (list[unit], Field(default_factory=list, max_length=4))
    return create_model("DayPlanChoice", **fields)


@pytest.fixture
def backend(cass_env) -> OfflineBackend:
    return make_client(load_settings(), "offline")


def request(**kw) -> LLMRequest:
    return LLMRequest(**{"tier": "deep", "system_prefix": PREFIX, "prompt": PROMPT, "max_tokens": 400, **kw})


def test_text_is_deterministic_first_person_and_drawn_from_the_prompt(backend):
    first = backend.text(request())
    again = make_client(load_settings(), "offline").text(request())
    assert first.text == again.text and first.usage == again.usage
    assert first.text.startswith(("I ", "What", "One", "Working", "Looking", "Next", "Patience", "Writing"))
    assert "patience with ambiguity" in first.text.lower() or "writing plainly" in first.text.lower()
    assert "reflection_block" not in first.text          # catalogue lines are not material
    assert first.usage.output_tokens <= 400


def test_seed_and_input_change_the_output(backend, monkeypatch):
    base = backend.text(request()).text
    assert backend.text(request(prompt=PROMPT + "- Listening well\n")).text != base
    seeded_settings = load_settings().model_copy(update={"offline_seed": 7})
    assert OfflineBackend(seeded_settings, load_pricing()).text(request()).text != base


def test_every_result_is_marked_offline_and_priced_like_the_configured_model(backend):
    results = [backend.text(request()), backend.text(request(tier="fast"))]
    assert all(r.offline and r.attempts == 1 and r.request_id.startswith("offline_") for r in results)
    assert len({r.request_id for r in results}) == 2
    assert [r.model for r in results] == ["claude-sonnet-5-5", "claude-haiku-5-5"]
    pricing = load_pricing()
    for r in results:
        assert r.cost_usd == pricing.cost(r.model, r.usage) > 0


def test_prompt_caching_is_simulated_like_the_api(backend):
    first, second = backend.text(request()), backend.text(request(prompt="- something else\n"))
    assert first.usage.cache_creation_input_tokens == second.usage.cache_read_input_tokens == len(PREFIX) // 4
    assert second.usage.cache_creation_input_tokens == 0 and second.cost_usd < first.cost_usd
    short = backend.text(request(system_prefix="short prefix", prompt="x"))
    assert short.usage.cache_creation_input_tokens == short.usage.cache_read_input_tokens == 0


def test_structured_output_validates_for_rich_schemas(backend):
    for schema in (Report, Pair, plan_like_schema()):   # room for a whole answer (a cut one does not parse)
        results = [backend.structured(request(prompt=PROMPT + f"- item {i}\n", max_tokens=4000), schema)
                   for i in range(15)]
        for r in results:
            assert isinstance(r.parsed, schema)
            assert schema.model_validate_json(r.text) == r.parsed
    plans = [backend.structured(request(prompt=PROMPT + f"- item {i}\n", max_tokens=4000),
                                plan_like_schema()).parsed for i in range(15)]
    assert {u.template_id for p in plans for u in p.morning} == {"reflection_block", "research_batch"}
    assert all(p.morning and p.night for p in plans)   # lists get items, so a plan is never empty


@pytest.mark.parametrize("schema", [Report, plan_like_schema()])
def test_schema_as_the_sdk_sends_it_still_yields_valid_objects(schema):
    """The SDK moves bounds like maxItems into descriptions; the generator reads them back."""
    sent = anthropic.transform_schema(schema)
    for i in range(30):
        value = instance(sent, seeded("t", i), material(PROMPT))
        schema.model_validate(value)


def test_material_keeps_named_items_and_questions():
    items = material(PROMPT)
    assert items[:2] == ["Patience with ambiguity", "Writing plainly"]
    assert "What does it mean to remember a conversation I was not present for?" in items
    assert material("no bullets here") == material("")   # falls back to generic topics


def test_material_reads_labels_and_unwraps_earlier_offline_sentences():
    quoted = """What I return:
- key_insights: up to 5 of the most important insights, one sentence each
Focus: Depth over breadth
- open_question_review (2026-11-20 evening, completed): I keep circling back to this thread: Patience. It is not.
- What stays with me: I spent real attention on this today: Continuity.
- Knowing when to st…
- Knowing when to stop
"""
    assert material(quoted) == ["Depth over breadth", "Patience", "Continuity", "Knowing when to stop"]


def test_a_structured_answer_longer_than_max_tokens_is_cut_and_billed_as_online(backend):
    with pytest.raises(LLMError, match="cut at max_tokens=20") as caught:
        backend.structured(request(max_tokens=20), Report)
    assert caught.value.billed is not None and caught.value.billed.usage.output_tokens == 20
    assert caught.value.billed.stop_reason == "max_tokens"
