#!/usr/bin/env python3
"""Server benchmarks and a bounded load test against an OpenAI-compatible endpoint on loopback
(nanbeige serve, or llama.cpp's llama-server for comparison). Standard library only.

  server_load.py concurrency URL [--streams 8] [--tokens 64] [--rounds 3]
      aggregate decode tokens/s of N concurrent streaming requests vs one stream alone; each round
      takes one stream's rate as the median of three requests; the median round is reported
  server_load.py followup URL [--context-tokens 2000]
      time to first token of a follow-up turn (+~50 tokens) vs the cold prefill of the whole conversation
  server_load.py load URL [--requests 200] [--concurrency 32]
      200 requests at 32 connections, 10% aborted mid-stream, 10% malformed; checks that every valid
      request is answered completely and that /metrics returns to idle (nanbeige only)

Every loop is bounded in count and time; only loopback addresses are accepted.
"""

import argparse
import concurrent.futures as cf
import http.client
import json
import random
import statistics
import sys
import time
import urllib.parse


def conn(url):
    u = urllib.parse.urlparse(url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("refusing a non-loopback target")
    return http.client.HTTPConnection(u.hostname, u.port, timeout=600)


def stream_chat(url, messages, max_tokens, abort_after=None, extra=None):
    """Stream one chat completion. Returns (ttft_s, total_s, tokens, finish_reason, aborted)."""
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    body.update(extra or {})
    c = conn(url)
    t0 = time.time()
    c.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:200]!r}")
    ttft, tokens, finish, chunks = None, None, None, 0
    for raw in r:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        ev = json.loads(data)
        if "error" in ev:
            raise RuntimeError(ev["error"])
        for ch in ev.get("choices", []):
            d = ch.get("delta", {})
            if ttft is None and (d.get("content") or d.get("reasoning_content")):
                ttft = time.time() - t0
            finish = ch.get("finish_reason") or finish
        if ev.get("usage"):
            tokens = ev["usage"]["completion_tokens"]
        chunks += 1
        if abort_after is not None and chunks >= abort_after:
            c.close()
            return ttft, time.time() - t0, 0, None, True
    c.close()
    return ttft, time.time() - t0, tokens, finish, False


def prompt(i):
    return [{"role": "user", "content": f"Write a short story about a robot named R{i}."}]


def concurrency_once(a, round_):
    """One stream alone (median of three requests: one request moved by +-20% between runs), then
    N streams together. Prompts differ per round so no round reuses another's cached prefix more
    than the shared chat template; ignore_eos keeps lengths equal."""
    extra = {"ignore_eos": True}
    singles = []
    for i in range(3):
        _, t1, n1, _, _ = stream_chat(a.url, prompt(1000 * round_ + 1 + i), a.tokens, extra=extra)
        singles.append(n1 / t1)
    single = statistics.median(singles)
    t0 = time.time()
    with cf.ThreadPoolExecutor(a.streams) as ex:
        res = list(ex.map(lambda i: stream_chat(a.url, prompt(1000 * round_ + 100 + i), a.tokens, extra=extra),
                          range(a.streams)))
    wall = time.time() - t0
    total = sum(r[2] or 0 for r in res)
    return single, total / wall


def concurrency(a):
    # Warm-up, then --rounds measurements; the median round (by ratio) is the result, all are shown.
    stream_chat(a.url, prompt(0), 8, extra={"ignore_eos": True})
    rounds = [concurrency_once(a, r) for r in range(a.rounds)]
    rounds.sort(key=lambda r: r[1] / r[0])
    single, agg = rounds[len(rounds) // 2]
    print(json.dumps({"single_stream_tokens_per_s": round(single, 2), "streams": a.streams,
                      "aggregate_tokens_per_s": round(agg, 2), "ratio": round(agg / single, 2),
                      "rounds": [{"single": round(s, 1), "aggregate": round(g, 1), "ratio": round(g / s, 2)}
                                 for s, g in rounds]}))


def followup(a):
    filler = "The quick brown fox jumps over the lazy dog. " * (a.context_tokens // 10)
    conv = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": filler + "Summarize the text above in one word."}]
    # Cold: a prompt never seen before (random salt at the start defeats any prefix cache).
    salt = f"[session {random.randrange(1 << 30)}] "
    cold_conv = [dict(conv[0], content=salt + conv[0]["content"]), conv[1]]
    ttft_cold, _, _, _, _ = stream_chat(a.url, cold_conv, 8)
    cold_conv += [{"role": "assistant", "content": "Fox."},
                  {"role": "user", "content": "Now explain, in about forty words, why a fox would jump over a dog, and what "
                                              "the dog might have been doing at that moment in the story."}]
    ttft_warm, _, _, _, _ = stream_chat(a.url, cold_conv, 8)
    print(json.dumps({"cold_ttft_s": round(ttft_cold, 3), "followup_ttft_s": round(ttft_warm, 3),
                      "ratio": round(ttft_warm / ttft_cold, 3)}))


def metrics(url):
    c = conn(url)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def load(a):
    rng = random.Random(1)
    kinds = ["ok"] * a.requests
    for i in rng.sample(range(a.requests), a.requests // 10):
        kinds[i] = "abort"
    rest = [i for i, k in enumerate(kinds) if k == "ok"]
    for i in rng.sample(rest, a.requests // 10):
        kinds[i] = "malformed"
    bad_bodies = [b"{broken", b'{"messages": []}', b'{"messages": [{"role": "user", "content": 1}]}',
                  b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -5}', b"\xff\xfe"]

    def one(i):
        kind = kinds[i]
        if kind == "malformed":
            c = conn(a.url)
            c.request("POST", "/v1/chat/completions", bad_bodies[i % len(bad_bodies)], {"Content-Type": "application/json"})
            r = c.getresponse()
            body = r.read()
            ok = 400 <= r.status < 500 and "error" in json.loads(body)
            return kind, ok, r.status
        try:
            _, _, tokens, finish, aborted = stream_chat(
                a.url, prompt(i), 24, abort_after=3 if kind == "abort" else None)
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            return kind, False, str(e)
        if kind == "abort":
            return kind, aborted, "aborted"
        return kind, finish in ("stop", "length") and tokens and tokens > 0, finish

    t0 = time.time()
    with cf.ThreadPoolExecutor(a.concurrency) as ex:
        results = list(ex.map(one, range(a.requests)))
    wall = time.time() - t0
    failures = [(i, r) for i, r in enumerate(results) if not r[1]]
    idle = None
    for _ in range(100):
        m = metrics(a.url)
        if m.get("nanbeige_batch_size") == 0 and m.get("nanbeige_queue_depth") == 0 and m.get("nanbeige_requests_in_flight") == 0:
            idle = m
            break
        time.sleep(0.1)
    summary = {
        "requests": a.requests, "concurrency": a.concurrency, "wall_s": round(wall, 1),
        "valid_ok": sum(1 for r in results if r[0] == "ok" and r[1]),
        "valid_total": kinds.count("ok"),
        "aborted": kinds.count("abort"), "malformed_4xx": sum(1 for r in results if r[0] == "malformed" and r[1]),
        "malformed_total": kinds.count("malformed"),
        "failures": failures[:5], "metrics_idle": idle is not None,
        "cancelled_total": idle and idle.get("nanbeige_requests_cancelled_total"),
    }
    print(json.dumps(summary))
    if failures or idle is None:
        sys.exit(1)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("concurrency"); c.add_argument("url"); c.add_argument("--streams", type=int, default=8)
    c.add_argument("--tokens", type=int, default=64)
    c.add_argument("--rounds", type=int, default=3, help="measurements; the median one is reported")
    f = sub.add_parser("followup"); f.add_argument("url"); f.add_argument("--context-tokens", type=int, default=2000)
    l = sub.add_parser("load"); l.add_argument("url"); l.add_argument("--requests", type=int, default=200)
    l.add_argument("--concurrency", type=int, default=32)
    a = p.parse_args()
    {"concurrency": concurrency, "followup": followup, "load": load}[a.cmd](a)


if __name__ == "__main__":
    main()
