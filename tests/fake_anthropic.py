"""A local server speaking the Anthropic Messages API wire format, for tests and benches.

POST /v1/messages/count_tokens answers with the input tokens the request would be billed for.
POST /v1/messages answers with a Message whose text (or JSON, for an output_config schema) comes
from llm/simulate.py, simulates prompt caching (first request with a cache_control prefix writes
it, identical later ones read it), and records every request and the usage of every 200 answer.
Message Batches: POST /v1/messages/batches takes requests under custom ids; GET
/v1/messages/batches/{id} reports `in_progress` until `batch_delay_s` has passed, then `ended` with
a results_url; GET .../results streams one JSONL line per request (succeeded with a simulated
message, or `expired` for every request while `expire_batches` is set). Batch answers are recorded
in `answered` too (flagged `batch`), under the message id the client records them by.
Failures are scripted per test (`server.script(...)`) or drawn at random (`fail_rate`, seeded; the
batch endpoints too).
It binds 127.0.0.1 on a free port and shuts itself down after `lifetime_s` at the latest.
"""
from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cass_pipelines.llm.base import Usage
from cass_pipelines.llm.pricing import UnknownModelError, load_pricing
from cass_pipelines.llm.simulate import (
    PromptCache,
    estimate_tokens,
    instance,
    material,
    seeded,
    truncated,
    write_text,
)

API_KEY = "sk-ant-test-DO-NOT-LEAK-0123456789"
DEFAULT_MIN_CACHEABLE = 1024
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
# A batch's timestamps: the SDK needs them, nothing of ours reads them, so never the real clock.
BATCH_STAMP = "2026-01-01T00:00:00Z"


@dataclass
class Reply:
    """One scripted answer. status 200 with body None means a normal simulated message."""
    status: int = 200
    body: Any = None                 # dict -> JSON; bytes -> sent raw (malformed)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0             # sleep before answering (timeouts)


def error(status: int, message: str = "", retry_after: str | None = None) -> Reply:
    kind = ERROR_TYPES.get(status, "api_error")
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return Reply(status, {"type": "error", "error": {"type": kind, "message": message or kind.replace("_", " ")}},
                 headers)


def rate_limited(retry_after: str = "0.05") -> Reply:
    return error(429, "Number of request tokens has exceeded your per-minute rate limit", retry_after)


def overloaded(retry_after: str = "0.05") -> Reply:
    return error(529, "Overloaded", retry_after)


def server_error(retry_after: str = "0.05") -> Reply:
    return error(500, "Internal server error", retry_after)


def malformed() -> Reply:
    return Reply(200, b'{"id": "msg_broken", "type": "message", "content": [', {})


def slow(seconds: float) -> Reply:
    return Reply(200, None, {}, seconds)


@dataclass
class Answered:
    request_id: str
    model: str
    usage: Usage
    batch: bool = False   # answered in a message batch (recorded under its message id)


class _Server(ThreadingHTTPServer):
    # A catch-up opens ~56 connections at once; with the default backlog of 5 the kernel drops the
    # SYNs beyond it and the client retries a second later, a stall a real API does not add.
    request_queue_size = 128


class FakeAnthropic:
    def __init__(self, seed: int = 0, fail_rate: float = 0.0, lifetime_s: float = 300.0):
        self.seed = seed
        self.fail_rate = fail_rate
        self.refuse_when: list[str] = []     # a request whose prompt contains one of these is refused (billed)
        self.requests: list[dict] = []       # {"body", "headers"} of every request received
        self.answered: list[Answered] = []   # every 200 message sent, with its usage
        self.counted: list[dict] = []        # bodies of token-counting requests (not in `requests`)
        self.on_count = lambda: None         # called as each token-counting request arrives
        self.batch_delay_s = 0.0             # a batch ends this long after it was created
        self.expire_batches = False          # batches end with every request expired (nothing billed)
        self.looks_fail_s = 0.0              # a look at a batch this soon after its creation answers 529
        self.batches: dict[str, dict] = {}   # id -> {"requests", "created", "results"}
        self.batch_looks: dict[str, int] = {}   # id -> GETs of the batch object (status polls)
        self._script: deque[Reply] = deque()
        self._random = random.Random(seed)
        self._cache = PromptCache()
        self._lock = threading.Lock()
        self._lifetime_s = lifetime_s
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._timer = threading.Timer(lifetime_s, self._server.shutdown)
        self._timer.daemon = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeAnthropic":
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order, before the normal behaviour."""
        with self._lock:
            self._script.extend(replies)

    def total_usage(self) -> Usage:
        return sum((a.usage for a in self.answered), Usage())

    # ---- request handling ----------------------------------------------------------------------

    def _next_reply(self) -> Reply | None:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return self._random_failure()

    def _random_failure(self) -> Reply | None:
        """A retryable failure drawn at `fail_rate` (the batch endpoints fail like the others)."""
        with self._lock:
            if self.fail_rate and self._random.random() < self.fail_rate:
                return self._random.choice([rate_limited("0.01"), overloaded("0.01"), server_error("0.01"),
                                            error(503, "Service unavailable", "0.01")])
        return None

    def count_tokens(self, body: dict) -> dict:
        """POST /v1/messages/count_tokens: the input tokens the same request would be billed for."""
        _, prefix, _, prompt, rest, schema_text = _parts(body)
        return {"input_tokens": estimate_tokens(prefix) + estimate_tokens(rest) + estimate_tokens(prompt)
                + estimate_tokens(schema_text)}

    def _message(self, body: dict) -> tuple[dict, Usage]:
        model = body["model"]
        schema = ((body.get("output_config") or {}).get("format") or {}).get("schema")
        _, prefix, ttl, prompt, rest, schema_text = _parts(body)
        rng = seeded(self.seed, json.dumps(body, sort_keys=True))
        items = material(prompt, rest, prefix)
        refused = any(marker in prompt for marker in self.refuse_when)
        text = ("I can't help with summarising this conversation." if refused else
                json.dumps(instance(schema, rng, items)) if schema else write_text(rng, items, body["max_tokens"]))
        text, stop = truncated(text, body["max_tokens"])
        searches = int(any(str(t.get("type", "")).startswith("web_search") for t in body.get("tools") or []))
        content: list[dict] = []
        if searches:
            tool_id = f"srvtoolu_{uuid.UUID(int=rng.getrandbits(128)).hex}"
            # As the API does: a text block narrating the search before it, the answer in the last one.
            content += [{"type": "text", "text": "I'll look that up first."},
                        {"type": "server_tool_use", "id": tool_id, "name": "web_search", "input": {"query": items[0]}},
                        {"type": "web_search_tool_result", "tool_use_id": tool_id, "content": []}]
        content.append({"type": "text", "text": text})
        try:
            min_cacheable = load_pricing().rates(model).min_cacheable_tokens
        except UnknownModelError:
            min_cacheable = DEFAULT_MIN_CACHEABLE
        rest_tokens = estimate_tokens(rest) + estimate_tokens(prompt) + estimate_tokens(schema_text)
        usage = self._cache.usage(model, prefix, rest_tokens, estimate_tokens(text), ttl, min_cacheable)
        usage = replace(usage, web_search_requests=searches)
        written_1h = usage.cache_creation_1h_input_tokens
        message = {
            "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": "refusal" if refused else stop, "stop_sequence": None,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                      "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                      "cache_read_input_tokens": usage.cache_read_input_tokens,
                      "cache_creation": {"ephemeral_5m_input_tokens": usage.cache_creation_input_tokens - written_1h,
                                         "ephemeral_1h_input_tokens": written_1h},
                      "server_tool_use": {"web_search_requests": searches, "web_fetch_requests": 0}},
        }
        return message, usage

    # ---- message batches ----------------------------------------------------------------------

    def create_batch(self, body: dict) -> dict:
        batch_id = f"msgbatch_{uuid.uuid4().hex[:24]}"
        with self._lock:
            self.batches[batch_id] = {"requests": body["requests"], "created": time.monotonic(), "results": None}
        return self.batch_object(batch_id)

    def batch_object(self, batch_id: str) -> dict:
        batch = self.batches[batch_id]
        ended = time.monotonic() - batch["created"] >= self.batch_delay_s
        if ended and batch["results"] is None:
            batch["results"] = [self._batch_result(r) for r in batch["requests"]]
        kinds = [line["result"]["type"] for line in batch["results"] or []]
        return {"id": batch_id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
                "request_counts": {"processing": 0 if ended else len(batch["requests"]),
                                   **{k: kinds.count(k) for k in ("succeeded", "errored", "canceled", "expired")}},
                "created_at": BATCH_STAMP, "expires_at": BATCH_STAMP, "ended_at": BATCH_STAMP if ended else None,
                "archived_at": None, "cancel_initiated_at": None,
                "results_url": f"{self.url}/v1/messages/batches/{batch_id}/results" if ended else None}

    def _batch_result(self, request: dict) -> dict:
        if self.expire_batches:
            return {"custom_id": request["custom_id"], "result": {"type": "expired"}}
        message, usage = self._message(request["params"])
        with self._lock:
            self.answered.append(Answered(message["id"], message["model"], usage, batch=True))
        return {"custom_id": request["custom_id"], "result": {"type": "succeeded", "message": message}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes on a kept-alive connection: with Nagle's algorithm the
            # body waits for the client's delayed ACK of the headers (40 ms per answer on Linux), a stall
            # a real API does not add and the benches would count as the client's own time.
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:   # keep test output clean
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                body = json.loads(raw or b"{}")
                if self.path.split("?")[0] == "/v1/messages/batches":
                    with fake._lock:
                        fake.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                    failure = fake._random_failure()
                    return self._send(failure or Reply(200, fake.create_batch(body)), None)
                if self.path.split("?")[0] == "/v1/messages/count_tokens":
                    fake.on_count()
                    with fake._lock:
                        fake.counted.append(body)
                    return self._send(Reply(200, fake.count_tokens(body)), None)
                with fake._lock:
                    fake.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                if self.path.split("?")[0] != "/v1/messages":
                    return self._send(error(404, f"no route {self.path}"), None)
                reply = fake._next_reply() or Reply()
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.status == 200 and reply.body is None:
                    message, usage = fake._message(body)
                    return self._send(Reply(200, message), Answered("", body["model"], usage))
                self._send(reply, None)

            def do_GET(self) -> None:
                failure = fake._random_failure()
                if failure:
                    return self._send(failure, None)
                parts = self.path.split("?")[0].strip("/").split("/")   # v1 messages batches ID [results]
                if parts[:3] != ["v1", "messages", "batches"] or len(parts) not in (4, 5) \
                        or parts[3] not in fake.batches:
                    return self._send(error(404, f"no route {self.path}"), None)
                if time.monotonic() - fake.batches[parts[3]]["created"] < fake.looks_fail_s:   # an outage
                    return self._send(overloaded("0.01"), None)
                batch = fake.batch_object(parts[3])
                if len(parts) == 4:
                    with fake._lock:
                        fake.batch_looks[parts[3]] = fake.batch_looks.get(parts[3], 0) + 1
                    return self._send(Reply(200, batch), None)
                if batch["processing_status"] != "ended" or parts[4] != "results":
                    return self._send(error(404, "results are not available yet"), None)
                lines = "".join(json.dumps(line) + "\n" for line in fake.batches[parts[3]]["results"])
                self._send(Reply(200, lines.encode()), None)

            def _send(self, reply: Reply, answered: Answered | None) -> None:
                request_id = f"req_{uuid.uuid4().hex}"
                payload = reply.body if isinstance(reply.body, bytes) else json.dumps(
                    {**reply.body, "request_id": request_id} if reply.status >= 400 else reply.body).encode()
                record = Answered(request_id, answered.model, answered.usage) if answered else None
                if record:   # recorded before sending, so a client never sees an answer not yet counted
                    with fake._lock:
                        fake.answered.append(record)
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("request-id", request_id)
                    self.send_header("content-length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    if record:
                        with fake._lock:
                            fake.answered.remove(record)

        return Handler


def _parts(body: dict) -> tuple[str, str, str, str, str, str]:
    """(model, cached prefix, its ttl, prompt, uncached system text, schema text) of a request."""
    system = body.get("system") or []
    blocks = [{"type": "text", "text": system}] if isinstance(system, str) else system
    marked = [i for i, b in enumerate(blocks) if b.get("cache_control")]
    cut = marked[-1] + 1 if marked else 0
    prefix = "".join(b["text"] for b in blocks[:cut])
    ttl = blocks[cut - 1]["cache_control"].get("ttl", "5m") if marked else "5m"
    prompt = "\n".join(_text_of(m["content"]) for m in body.get("messages", []))
    schema = ((body.get("output_config") or {}).get("format") or {}).get("schema")
    rest = "".join(b["text"] for b in blocks[cut:])
    return body["model"], prefix, ttl, prompt, rest, json.dumps(schema) if schema else ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(block.get("text", "") for block in content if isinstance(block, dict))
