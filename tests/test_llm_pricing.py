"""Pricing: a versioned table, exact cost from reported usage, unknown models refused."""
from __future__ import annotations

import pytest

from cass_pipelines.config.settings import load_settings
from cass_pipelines.domain.settings import SettingsError
from cass_pipelines.llm import holds
from cass_pipelines.llm.base import PromptCount, Usage
from cass_pipelines.llm.factory import make_client
from cass_pipelines.llm.pricing import UnknownModelError, load_pricing


def test_table_has_every_figure_with_date_and_source_and_the_cache_ratios():
    pricing = load_pricing()
    assert {"claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5"} <= set(pricing.models)
    for r in pricing.models.values():
        assert r.as_of and "verify" in r.source
        assert r.cache_write_5m == pytest.approx(1.25 * r.input)
        assert r.cache_write_1h == pytest.approx(2 * r.input)
        assert r.cache_read == pytest.approx(0.1 * r.input)
        assert r.output > r.input > 0


def test_cost_is_exact_from_usage_with_cache_tokens_split_by_ttl():
    usage = Usage(input_tokens=1_000, output_tokens=2_000, cache_creation_input_tokens=10_000,
                  cache_read_input_tokens=100_000, cache_creation_1h_input_tokens=4_000)
    # sonnet: $3 in, $15 out, $3.75 5m write, $6 1h write, $0.30 read, per million tokens
    expected = (1_000 * 3 + 2_000 * 15 + 6_000 * 3.75 + 4_000 * 6 + 100_000 * 0.30) / 1e6
    assert load_pricing().cost("claude-sonnet-5-5", usage) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.1095)


def test_web_searches_are_billed_per_search():
    usage = Usage(input_tokens=0, output_tokens=0, web_search_requests=3)
    assert load_pricing().cost("claude-haiku-5-5", usage) == pytest.approx(0.03)


def test_a_cold_hold_bounds_any_real_cost_of_the_same_prompt():
    pricing = load_pricing()
    rates = pricing.rates("claude-haiku-5-5")
    count = PromptCount(total=5_000, prefix=5_000)
    hold = holds.input_usd(rates, count, warm=False, ttl="5m") + holds.output_usd(rates, 1_000)
    for usage in (Usage(5_000, 1_000), Usage(0, 1_000, 5_000, 0, 0), Usage(100, 1_000, 0, 4_900)):
        assert pricing.cost("claude-haiku-5-5", usage) <= hold
    hour = holds.input_usd(rates, count, warm=False, ttl="1h") + holds.output_usd(rates, 1_000)
    assert pricing.cost("claude-haiku-5-5", Usage(0, 1_000, 5_000, 0, 5_000)) <= hour


def test_unknown_model_is_a_settings_error_never_zero(cass_env):
    with pytest.raises(UnknownModelError, match="claude-nonexistent"):
        load_pricing().cost("claude-nonexistent", Usage(10, 10))
    settings = load_settings().model_copy(update={"models": {"fast": "claude-haiku-5-5", "deep": "claude-typo"}})
    for mode in ("offline", "anthropic"):
        with pytest.raises(SettingsError, match="models.deep: model 'claude-typo' has no price"):
            make_client(settings, mode)
