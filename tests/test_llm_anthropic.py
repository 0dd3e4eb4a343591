"""The Anthropic backend against a local server speaking the Messages API wire format."""
from __future__ import annotations

import time
from typing import Literal

import pytest
from fake_anthropic import API_KEY, Reply, error, malformed, overloaded, rate_limited, server_error, slow
from pydantic import BaseModel, Field

from cass_pipelines.config.settings import load_settings
from cass_pipelines.domain.settings import SettingsError
from cass_pipelines.llm.anthropic_backend import AnthropicBackend
from cass_pipelines.llm.base import LLMError, LLMRequest
from cass_pipelines.llm.factory import make_client
from cass_pipelines.llm.pricing import load_pricing

PREFIX = "I am Cass, and this is my catalogue. " * 300     # ~2,700 tokens: cacheable for sonnet (2,048)
PROMPT = "My growth edges:\n- Patience with ambiguity\n- Writing plainly\n"


class Choice(BaseModel):
    template_id: Literal["reflection_block", "research_batch"]
    focus: str
    steps: list[str] = Field(max_length=3)


def make_backend(**settings) -> AnthropicBackend:
    base = {"max_retries": 3, "request_timeout_s": 10.0}
    return AnthropicBackend(load_settings().model_copy(update={**base, **settings}), load_pricing())


def req(**kw) -> LLMRequest:
    return LLMRequest(**{"tier": "deep", "system_prefix": PREFIX, "prompt": PROMPT, "max_tokens": 300, **kw})


def test_text_call_maps_usage_request_id_cost_and_caches_the_prefix(fake_anthropic):
    backend = make_client(load_settings(), "anthropic")
    first = backend.text(req(system_suffix="Today only: be brief."))
    second = backend.text(req(system_suffix="Today only: be brief.", prompt="- Something else\n"))
    sent = fake_anthropic.requests[0]["body"]
    assert sent["model"] == "claude-sonnet-5-5" and sent["max_tokens"] == 300
    assert sent["system"] == [{"type": "text", "text": PREFIX, "cache_control": {"type": "ephemeral"}},
                              {"type": "text", "text": "Today only: be brief."}]
    assert sent["messages"] == [{"role": "user", "content": PROMPT}]
    answered = fake_anthropic.answered
    assert [first.request_id, second.request_id] == [a.request_id for a in answered]
    assert [first.usage, second.usage] == [a.usage for a in answered]
    assert first.usage.cache_creation_input_tokens == second.usage.cache_read_input_tokens > 1000
    assert first.cost_usd == load_pricing().cost("claude-sonnet-5-5", first.usage) > second.cost_usd
    assert (first.attempts, first.offline, first.stop_reason) == (1, False, "end_turn")
    assert "patience with ambiguity" in first.text.lower() or "writing plainly" in first.text.lower()


def test_one_hour_cache_ttl_is_requested_and_priced(fake_anthropic):
    result = make_backend(cache_ttl="1h").text(req())
    assert fake_anthropic.requests[0]["body"]["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert result.usage.cache_creation_1h_input_tokens == result.usage.cache_creation_input_tokens > 0
    rates = load_pricing().rates("claude-sonnet-5-5")
    u = result.usage
    expected = (u.input_tokens * rates.input + u.output_tokens * rates.output
                + u.cache_creation_1h_input_tokens * rates.cache_write_1h) / 1e6
    assert result.cost_usd == pytest.approx(expected, rel=1e-12)


def test_structured_output_uses_the_json_schema_format_and_validates(fake_anthropic):
    result = make_backend().structured(req(), Choice)
    assert isinstance(result.parsed, Choice) and len(result.parsed.steps) <= 3
    fmt = fake_anthropic.requests[0]["body"]["output_config"]["format"]
    assert fmt["type"] == "json_schema"
    assert fmt["schema"]["properties"]["template_id"]["enum"] == ["reflection_block", "research_batch"]


@pytest.mark.parametrize("failure,status", [(rate_limited("0.2"), 429), (overloaded("0.2"), 529),
                                            (server_error("0.2"), 500)])
def test_retryable_failure_then_success_honours_retry_after(fake_anthropic, failure, status):
    fake_anthropic.script(failure)
    started = time.monotonic()
    result = make_backend().text(req())
    assert time.monotonic() - started >= 0.2          # waited as the server asked
    assert result.attempts == 2
    assert [r["headers"]["x-stainless-retry-count"] for r in fake_anthropic.requests] == ["0", "1"]
    assert len(fake_anthropic.answered) == 1 and result.usage == fake_anthropic.answered[0].usage


def test_retries_exhausted_is_a_retryable_error(fake_anthropic):
    fake_anthropic.script(*[overloaded("0.01")] * 3)
    with pytest.raises(LLMError, match="529.*after 3 attempt") as info:
        make_backend(max_retries=2).text(req())
    assert info.value.status == 529 and info.value.retryable and len(fake_anthropic.requests) == 3


def test_hard_deadline_on_a_slow_response(fake_anthropic):
    fake_anthropic.script(slow(3))
    started = time.monotonic()
    with pytest.raises(LLMError, match="deadline of 0.5s exceeded") as info:
        make_backend(request_timeout_s=0.5).text(req())
    assert time.monotonic() - started < 1.5 and info.value.retryable


def test_a_hung_attempt_times_out_alone_and_is_retried_within_the_deadline(fake_anthropic):
    fake_anthropic.script(slow(5.0))                 # the first attempt hangs; the retry answers at once
    started = time.perf_counter()
    result = make_backend(request_timeout_s=8.0, attempt_timeout_s=0.5).text(req())
    assert result.attempts == 2 and result.text
    assert time.perf_counter() - started < 5.0       # did not wait for the hung attempt
    assert len(fake_anthropic.answered) == 1         # only the retry was answered (and billed)


def test_retry_after_beyond_the_deadline_fails_now_instead_of_sleeping(fake_anthropic):
    fake_anthropic.script(rate_limited("30"))
    started = time.monotonic()
    with pytest.raises(LLMError, match="deadline of 2s exceeded after 1 attempt") as info:
        make_backend(request_timeout_s=2).text(req())
    assert time.monotonic() - started < 1 and info.value.status == 429


@pytest.mark.parametrize("status,message", [
    (400, "max_tokens: must be greater than 0"), (401, "invalid x-api-key"),
    (403, "Your API key does not have permission"), (404, "model: claude-sonnet-5-5 not found")])
def test_non_retryable_errors_fail_fast_with_the_api_message_and_no_key(fake_anthropic, status, message):
    fake_anthropic.script(error(status, message))
    started = time.monotonic()
    with pytest.raises(LLMError) as info:
        make_backend().text(req())
    exc = info.value
    assert time.monotonic() - started < 1 and len(fake_anthropic.requests) == 1
    assert (exc.status, exc.retryable) == (status, False)
    assert message in str(exc) and str(status) in str(exc) and exc.request_id.startswith("req_")
    assert API_KEY not in f"{exc} {exc!r} {exc.args}" and API_KEY[-12:] not in str(exc)


def test_malformed_body_is_an_llm_error(fake_anthropic):
    fake_anthropic.script(malformed())
    with pytest.raises(LLMError, match="unreadable response"):
        make_backend(max_retries=0).text(req())


def test_structured_answer_that_does_not_validate_is_an_error_that_still_carries_its_bill(fake_anthropic):
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-5-5",
               "content": [{"type": "text", "text": '{"template_id": "delete_everything"'}],
               "stop_reason": "max_tokens", "stop_sequence": None,
               "usage": {"input_tokens": 100, "output_tokens": 300}}
    fake_anthropic.script(Reply(200, message))
    with pytest.raises(LLMError, match="did not match Choice") as info:
        make_backend().structured(req(), Choice)
    billed = info.value.billed
    assert billed.usage.output_tokens == 300 and billed.cost_usd == pytest.approx((100 * 3 + 300 * 15) / 1e6)
    assert billed.request_id == info.value.request_id


def test_web_search_tool_is_sent_only_when_allowed_and_billed(fake_anthropic):
    assert "tools" not in (make_backend().text(req(web_search=True)), fake_anthropic.requests[-1]["body"])[1]
    result = make_backend(web_search=True).text(req(web_search=True))
    tool = fake_anthropic.requests[-1]["body"]["tools"][0]
    assert (tool["type"], tool["name"], tool["max_uses"]) == ("web_search_20260318", "web_search", 3)
    assert result.usage.web_search_requests == 1 and result.text.strip()
    assert result.cost_usd == pytest.approx(load_pricing().cost("claude-sonnet-5-5", result.usage))


def test_random_retryable_failures_still_account_for_every_answer(fake_anthropic):
    fake_anthropic.fail_rate = 0.3
    backend = make_backend(max_retries=8)
    results = [backend.text(req(prompt=f"- topic {i}\n")) for i in range(20)]
    assert len(fake_anthropic.requests) > len(fake_anthropic.answered) == 20
    assert sum((r.usage for r in results), type(results[0].usage)()) == fake_anthropic.total_usage()
    assert sum(r.attempts for r in results) == len(fake_anthropic.requests)


def test_a_new_prefix_is_probed_while_the_prompt_is_counted_and_a_failed_probe_is_asked_again(fake_anthropic):
    """Each count is a round trip made before a call: the prompt and its new prefix's two probes go at once
    (they went one after another), the bare probe once per model, and a known prefix needs the prompt's
    count alone. A probe that failed is not kept: the next call asks again."""
    import threading

    in_flight, most, lock = [0], [0], threading.Lock()

    def counting() -> None:   # each count takes 0.3 s at the server
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.3)
        with lock:
            in_flight[0] -= 1

    fake_anthropic.on_count = counting
    backend = make_backend()
    first = backend.count_tokens(req())
    assert most[0] == 3 and len(fake_anthropic.counted) == 3
    one_word = {"model": "m", "messages": [{"role": "user", "content": "."}]}
    assert first.prefix == (fake_anthropic.count_tokens({**one_word, "system": [{"type": "text", "text": PREFIX}]})
                            ["input_tokens"] - fake_anthropic.count_tokens(one_word)["input_tokens"]) > 1000
    assert first.total > first.prefix
    assert backend.count_tokens(req(prompt="- Another prompt\n")).prefix == first.prefix
    assert len(fake_anthropic.counted) == 4                        # the prompt alone
    backend.count_tokens(req(system_prefix="I am Wren. " * 300))
    assert len(fake_anthropic.counted) == 6                        # the prompt and the new prefix, not the bare one

    real, failed = backend._count, []

    def failing_once(**params):
        if params.get("system") and params["messages"] == [{"role": "user", "content": "."}] and not failed:
            failed.append(params)
            raise LLMError("Anthropic token counting error 529: Overloaded", status=529, retryable=True)
        return real(**params)

    backend._count = failing_once
    other = req(system_prefix="I am Ash. " * 300)
    with pytest.raises(LLMError, match="529"):
        backend.count_tokens(other)
    assert backend.count_tokens(other).prefix > 0 and failed   # probed again, not the failure kept


def test_anthropic_mode_without_a_key_is_a_settings_error(cass_env, monkeypatch):
    monkeypatch.setenv("HOME", str(cass_env["CASS_HOME"]))   # no SDK credential files either
    with pytest.raises(SettingsError, match="ANTHROPIC_API_KEY"):
        make_client(load_settings(), "anthropic")
