"""End-to-end tests of `nanbeige serve` driven by the official `openai` Python client (and raw
HTTP for what the client cannot send), on the real test models. scripts/test.sh runs them after the
Rust tests; run alone with:  NANBEIGE_BIN=path/to/nanbeige pytest tests/server
"""

import concurrent.futures as cf
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import openai
import pytest

BIN = os.environ.get("NANBEIGE_BIN") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/nanbeige/target")), "release", "nanbeige"
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [BIN, "serve", "--port", str(self.port), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()}")
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def client(self, **kw):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "none"), max_retries=0, **kw)

    def raw(self, path, body, headers=None, method="POST"):
        """(status, parsed JSON or text) for a raw request."""
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self):
        out = {}
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line and not line.startswith("#"):
                    k, v = line.rsplit(" ", 1)
                    out[k] = float(v)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def smol():
    s = Server("--model", "smollm2", "--max-batch", "8")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def qwen():
    s = Server("--model", "qwen2.5-coder", "--max-batch", "4")
    yield s
    s.stop()


QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]

WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def test_chat_answers_with_usage(smol):
    r = smol.client().chat.completions.create(model="smollm2", messages=QUESTION, temperature=0, max_tokens=30)
    c = r.choices[0]
    assert c.message.content == "The capital of France is Paris."
    assert c.message.role == "assistant"
    assert c.finish_reason == "stop"
    assert r.usage.completion_tokens == 7
    assert r.usage.total_tokens == r.usage.prompt_tokens + 7
    assert r.object == "chat.completion"


def test_streaming_equals_non_streaming(smol):
    cl = smol.client()
    full = cl.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0, max_tokens=30)
    chunks = list(
        cl.chat.completions.create(
            model="smollm2", messages=QUESTION, temperature=0, max_tokens=30, stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == full.choices[0].message.content
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_n_choices_are_reproducible_with_a_seed(smol):
    cl = smol.client()
    kw = dict(model="smollm2", messages=[{"role": "user", "content": "Tell me a story."}], temperature=1.0,
              max_tokens=16, n=2, seed=5)
    a = [c.message.content for c in cl.chat.completions.create(**kw).choices]
    b = [c.message.content for c in cl.chat.completions.create(**kw).choices]
    assert len(a) == 2 and a == b
    assert a[0] != a[1], "the two choices should be sampled differently"


def test_logprobs(smol):
    r = smol.client().chat.completions.create(
        model="smollm2", messages=QUESTION, temperature=0, max_tokens=5, logprobs=True, top_logprobs=3
    )
    lp = r.choices[0].logprobs.content
    assert len(lp) == r.usage.completion_tokens == 5
    for e in lp:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        # greedy: the chosen token is the most likely one
        assert e.top_logprobs[0].token == e.token


def test_stop_and_length(smol):
    cl = smol.client()
    r = cl.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0, stop=["Paris"])
    assert r.choices[0].message.content == "The capital of France is"
    assert r.choices[0].finish_reason == "stop"
    r = cl.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0, max_tokens=3)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3


def test_text_completions(smol):
    r = smol.client().completions.create(model="smollm2", prompt="The capital of France is", max_tokens=3, temperature=0)
    assert r.choices[0].text.strip().startswith("Paris")
    assert r.usage.completion_tokens == 3


def test_models_and_health(smol):
    ids = [m.id for m in smol.client().models.list().data]
    assert ids == ["SmolLM2-135M-Instruct.Q4_1"]
    status, body = smol.raw("/health", None, method="GET")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_bad_requests_get_openai_style_errors(smol):
    cl = smol.client()
    with pytest.raises(openai.NotFoundError):
        cl.chat.completions.create(model="gpt-4o", messages=QUESTION)
    with pytest.raises(openai.BadRequestError) as e:
        cl.chat.completions.create(model="smollm2", messages=QUESTION, temperature=7)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        cl.chat.completions.create(model="smollm2", messages=[])
    with pytest.raises(openai.BadRequestError) as e:
        cl.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=10**9)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        cl.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "word " * 9000}])
    assert e.value.body["code"] == "context_length_exceeded"
    h = {"content-type": "application/json"}
    cases = [
        (b"{not json", 400),
        (b"\xff\xfe\x00bad utf8", 400),
        (b"[1, 2]", 400),
        (json.dumps({"messages": [{"role": "user", "content": 3}]}).encode(), 400),
        (json.dumps({"messages": QUESTION, "n": "two"}).encode(), 400),
        (b"{" + b'"x": "' + b"a" * (9 << 20) + b'"}', 413),
    ]
    for body, want in cases:
        status, text = smol.raw("/v1/chat/completions", body, h)
        assert status == want, (body[:40], status, text[:200])
        err = json.loads(text)["error"]
        assert err["message"] and err["type"]
    status, text = smol.raw("/v1/nope", b"{}", h)
    assert status == 404 and "error" in json.loads(text)
    # The server is still fine afterwards.
    assert cl.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0, max_tokens=3).choices


def test_prefix_cache_serves_a_follow_up_turn(smol):
    cl = smol.client()
    history = [{"role": "system", "content": "You are a helpful assistant. " * 30}] + QUESTION
    r1 = cl.chat.completions.create(model="smollm2", messages=history, temperature=0, max_tokens=8)
    history += [{"role": "assistant", "content": r1.choices[0].message.content},
                {"role": "user", "content": "And of Germany?"}]
    r2 = cl.chat.completions.create(model="smollm2", messages=history, temperature=0, max_tokens=8)
    cached = r2.usage.prompt_tokens_details.cached_tokens
    assert cached >= r1.usage.prompt_tokens, (cached, r1.usage.prompt_tokens)


def test_concurrent_streams_all_complete_and_slots_are_freed(smol):
    cl = smol.client()

    def one(i):
        stream = cl.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": f"Count to {i + 3}."}], max_tokens=24,
            temperature=0, stream=True,
        )
        text, finish = "", None
        for ch in stream:
            if ch.choices:
                text += ch.choices[0].delta.content or ""
                finish = ch.choices[0].finish_reason or finish
        return text, finish

    with cf.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(8)))
    assert all(t and f in ("stop", "length") for t, f in results), results
    m = smol.metrics()
    assert m["nanbeige_batch_size"] == 0 and m["nanbeige_queue_depth"] == 0


def test_client_disconnect_frees_its_slot(smol):
    before = smol.metrics()["nanbeige_requests_cancelled_total"]
    body = json.dumps({"messages": QUESTION, "max_tokens": 4000, "ignore_eos": True, "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", smol.port))
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )
    got = b""
    while got.count(b"data:") < 3:
        got += s.recv(4096)
    s.close()
    deadline = time.time() + 10
    while time.time() < deadline:
        m = smol.metrics()
        if m["nanbeige_batch_size"] == 0 and m["nanbeige_requests_cancelled_total"] > before:
            return
        time.sleep(0.1)
    pytest.fail(f"slot not freed: {smol.metrics()}")


def test_tools_are_returned_as_tool_calls(qwen):
    cl = qwen.client()
    msgs = [{"role": "user", "content": "What's the weather like in Paris right now?"}]
    r = cl.chat.completions.create(model="qwen2.5-coder", messages=msgs, tools=WEATHER, temperature=0, max_tokens=60)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", c
    call = c.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    # Feed the result back; the model answers in words, and the shared prefix came from the cache.
    msgs += [c.message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"city": "Paris", "temp_c": 18})}]
    r2 = cl.chat.completions.create(model="qwen2.5-coder", messages=msgs, tools=WEATHER, temperature=0, max_tokens=40)
    assert r2.choices[0].message.content and "18" in r2.choices[0].message.content
    assert r2.usage.prompt_tokens_details.cached_tokens >= r.usage.prompt_tokens - 1


def test_forced_tool_choice_streams_tool_call_deltas(qwen):
    cl = qwen.client()
    msgs = [{"role": "user", "content": "I am flying to Berlin tomorrow."}]
    stream = cl.chat.completions.create(
        model="qwen2.5-coder", messages=msgs, tools=WEATHER, temperature=0, max_tokens=40, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    calls, finish = [], None
    for ch in stream:
        if ch.choices:
            calls += ch.choices[0].delta.tool_calls or []
            finish = ch.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    args = json.loads(calls[0].function.arguments)
    assert isinstance(args, dict) and args, args


def test_api_key_is_required_when_set():
    s = Server("--model", "smollm2", "--api-key", "s3cret")
    try:
        with pytest.raises(openai.AuthenticationError):
            s.client(api_key="wrong").models.list()
        assert s.client(api_key="s3cret").models.list().data
        status, _ = s.raw("/health", None, method="GET")
        assert status == 200
    finally:
        s.stop()


def test_sigterm_lets_running_requests_finish():
    s = Server("--model", "smollm2")
    try:
        with cf.ThreadPoolExecutor(1) as ex:
            fut = ex.submit(lambda: s.client().chat.completions.create(
                model="smollm2", messages=QUESTION, max_tokens=60, temperature=0,
                extra_body={"ignore_eos": True}))
            time.sleep(1.5)
            s.proc.send_signal(signal.SIGTERM)
            r = fut.result(timeout=60)
        assert r.usage.completion_tokens == 60
        assert s.proc.wait(30) == 0
    finally:
        s.stop()


def test_json_schema_output_is_enforced(qwen):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "species": {"enum": ["cat", "dog"]}},
        "required": ["name", "age", "species"],
        "additionalProperties": False,
    }
    r = qwen.client().chat.completions.create(
        model="qwen2.5-coder", temperature=0, max_tokens=80,
        messages=[{"role": "user", "content": "Describe a cat named Tom who is 3 years old."}],
        response_format={"type": "json_schema", "json_schema": {"name": "pet", "schema": schema}},
    )
    v = json.loads(r.choices[0].message.content)
    assert set(v) == {"name", "age", "species"} and isinstance(v["age"], int) and v["species"] in ("cat", "dog")
    assert r.choices[0].finish_reason == "stop"
    r = qwen.client().chat.completions.create(
        model="qwen2.5-coder", temperature=0.9, seed=1, max_tokens=80,
        messages=[{"role": "user", "content": "List three colors."}], response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_full_queue_gets_429_and_the_rest_complete():
    s = Server("--model", "smollm2", "--max-batch", "1", "--max-queue", "1")
    try:
        body = json.dumps({"messages": QUESTION, "max_tokens": 60, "ignore_eos": True, "temperature": 0}).encode()
        with cf.ThreadPoolExecutor(6) as ex:
            futs = [ex.submit(s.raw, "/v1/chat/completions", body, {"Content-Type": "application/json"}) for _ in range(6)]
            results = [f.result(timeout=120) for f in futs]
        statuses = sorted(st for st, _ in results)
        assert 429 in statuses and 200 in statuses, statuses
        for st, text in results:
            if st == 429:
                err = json.loads(text)["error"]
                assert err["code"] == "queue_full" and err["type"] == "rate_limit_error"
            else:
                assert st == 200
                assert json.loads(text)["usage"]["completion_tokens"] == 60
        m = s.metrics()
        assert m["nanbeige_queue_depth"] == 0 and m["nanbeige_batch_size"] == 0
    finally:
        s.stop()


def test_request_timeout_ends_a_long_generation():
    s = Server("--model", "smollm2", "--request-timeout", "1")
    try:
        t0 = time.time()
        r = s.client().chat.completions.create(
            model="smollm2", messages=QUESTION, max_tokens=4000, temperature=0, extra_body={"ignore_eos": True}
        )
        elapsed = time.time() - t0
        assert elapsed < 15, elapsed
        assert r.choices[0].finish_reason == "length"
        assert 0 < r.usage.completion_tokens < 4000
        # The server keeps serving after a timeout.
        r = s.client().chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=5, temperature=0)
        assert r.usage.completion_tokens == 5
    finally:
        s.stop()
