"""A whole day against a flaky Messages API: every token the server answered with 200 is in the ledger."""
from __future__ import annotations

import json

from fake_anthropic import overloaded
from support import SAMPLE_DAY

from cass_pipelines.cli.main import main
from cass_pipelines.config.settings import load_settings
from cass_pipelines.store import ledger
from cass_pipelines.store.db import Store

DAY = SAMPLE_DAY


def test_day_with_20_percent_retryable_failures_ledgers_exactly_what_the_server_answered(
        sample_home, fake_anthropic, monkeypatch, capsys):
    fake_anthropic.fail_rate = 0.2
    # The day makes few interactive calls (its memory work goes in one batch): the first one surely fails.
    fake_anthropic.script(overloaded("0.01"))
    monkeypatch.setenv("CASS_LLM", "anthropic")
    assert main(["run-day", "--date", DAY.isoformat(), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert all(run["success"] for run in report["runs"]), report["runs"]
    answered = fake_anthropic.answered
    assert len(answered) > 10
    # Failures happened and were retried: more messages were posted than answered one by one (a batch's
    # answers come back many to one request).
    posted = [r for r in fake_anthropic.requests if r["path"].split("?")[0] == "/v1/messages"]
    assert len(posted) > len([a for a in answered if not a.batch]) > 5

    store = Store(load_settings().db_path)
    totals = ledger.totals(store)                                      # the planned day and the memory job
    served = fake_anthropic.total_usage()
    assert totals["calls"] == len(answered)
    assert (totals["input_tokens"], totals["output_tokens"], totals["cache_creation_input_tokens"],
            totals["cache_read_input_tokens"]) == (served.input_tokens, served.output_tokens,
                                                   served.cache_creation_input_tokens, served.cache_read_input_tokens)
    rows = ledger.rows(store, DAY)
    assert {r["request_id"] for r in rows} <= {a.request_id for a in answered}
    assert not any(r["offline"] for r in rows) and any(r["attempts"] > 1 for r in rows)
    assert report["plan"]["source"] == "llm"
    # Counting a prompt's cached prefix takes two probes (with and without it): once per prefix for the
    # whole day, though six runs and up to 56 threads at once counted prompts with it.
    probe = [{"role": "user", "content": "."}]
    prefixes = {b["system"][0]["text"] for b in fake_anthropic.counted if b.get("system") and b["messages"] != probe}
    assert prefixes and len([b for b in fake_anthropic.counted if b["messages"] == probe]) == 2 * len(prefixes)
