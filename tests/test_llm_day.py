"""A whole day against a flaky Messages API: every token the server answered with 200 is in the ledger."""
from __future__ import annotations

import json
import threading
import time
import traceback

import pytest
from fake_anthropic import overloaded
from support import SAMPLE_DAY

from cass_pipelines.cli.main import main
from cass_pipelines.config.settings import load_settings
from cass_pipelines.llm.anthropic_backend import AnthropicBackend
from cass_pipelines.store import db, ledger
from cass_pipelines.store.db import Store

DAY = SAMPLE_DAY


@pytest.fixture
def file_held_across_waits(monkeypatch) -> list[str]:
    """Every API call or wait made by a thread while it has the DuckDB file open (a session, or a bare
    connection or transaction of any store): the file must be free while the API works or a batch runs,
    since the UI, the daemon and the CLI need it. A thread waiting for its group commit's leader
    (Store.grouped) waits for bookkeeping, not for the API, and is left out."""
    held, found = threading.local(), []
    connect, close = db.connect, db.close

    def counted_connect(*args, **kwargs):
        conn = connect(*args, **kwargs)
        held.n = getattr(held, "n", 0) + 1
        return conn

    def counted_close(*args, **kwargs):
        held.n -= 1
        close(*args, **kwargs)

    def note(what: str) -> None:   # this thread has the file open
        if getattr(held, "n", 0) > 0:
            stack = traceback.extract_stack()[:-2]
            if not any(f.name == "grouped" and f.filename.endswith("store/db.py") for f in stack):
                found.append(f"{what} at " + " < ".join(f"{f.name}" for f in reversed(stack[-6:])))

    monkeypatch.setattr(db, "connect", counted_connect)
    monkeypatch.setattr(db, "close", counted_close)
    for name in ("count_tokens", "text", "structured", "submit_batch", "collect_batch"):
        def call(*args, _name=name, _real=getattr(AnthropicBackend, name), **kwargs):
            note(_name)
            return _real(*args, **kwargs)
        monkeypatch.setattr(AnthropicBackend, name, call)
    for cls in (threading.Condition, threading.Event):
        def wait(self, timeout=None, _real=cls.wait, _what=f"{cls.__name__}.wait"):
            note(_what)
            return _real(self, timeout)
        monkeypatch.setattr(cls, "wait", wait)
    real_sleep = time.sleep

    def sleep(seconds):
        note(f"time.sleep({seconds})")
        real_sleep(seconds)
    monkeypatch.setattr(time, "sleep", sleep)
    return found


def test_day_with_20_percent_retryable_failures_ledgers_exactly_what_the_server_answered(
        sample_home, fake_anthropic, monkeypatch, capsys, file_held_across_waits):
    fake_anthropic.fail_rate = 0.2
    # The day makes few interactive calls (its memory work goes in one batch): the first one surely fails.
    fake_anthropic.script(overloaded("0.01"))
    monkeypatch.setenv("CASS_LLM", "anthropic")
    assert main(["run-day", "--date", DAY.isoformat(), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert all(run["success"] for run in report["runs"]), report["runs"]
    assert file_held_across_waits == []   # steps keep one open between calls, never across one
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
    rows = ledger.rows(store)   # the day's calls and its week's plan (paid from the week's Monday)
    assert {r["request_id"] for r in rows} <= {a.request_id for a in answered}
    assert not any(r["offline"] for r in rows) and any(r["attempts"] > 1 for r in rows)
    assert report["plan"]["source"] == "llm"
    # Counting a prompt's cached prefix takes two probes (with it: once per prefix; without: once per model)
    # for the whole day, though six runs and up to 56 threads at once counted prompts with it.
    probe = [{"role": "user", "content": "."}]
    prefixes = {(b["model"], b["system"][0]["text"]) for b in fake_anthropic.counted
                if b.get("system") and b["messages"] != probe}
    probes = [b for b in fake_anthropic.counted if b["messages"] == probe]
    assert prefixes and len([b for b in probes if b.get("system")]) == len(prefixes)
    assert sorted(b["model"] for b in probes if not b.get("system")) == sorted({m for m, _ in prefixes})   # once a model
