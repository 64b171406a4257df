#!/usr/bin/env python3
"""Reference outputs of the two real test GGUF models, computed by transformers (dequantized to f32).

Writes tests/fixtures/gguf/<name>.json for
  smollm2 = SmolLM2-135M-Instruct.Q4_1.gguf      (arch llama)
  qwen2   = Qwen2.5-Coder-0.5B-Instruct.gguf     (arch qwen2)
Models are looked up in ${NANBEIGE_CACHE:-$HOME/.cache/nanbeige}/models (`nanbeige pull all`).

Schema:
  {"model_file", "sha256", "arch", "vocab_size" (= logits width), "eos_token_id", "transformers_version",
   "torch_version", "near_tie_threshold": 0.05,
   "cases": [{"name", "kind": "chat"|"raw",
              "messages" (+ "tools") : chat cases only, what was rendered,
              "prompt": the exact text encoded (chat cases: tokenizer.apply_chat_template(messages,
                        add_generation_prompt=True, tokenize=False) with the GGUF's own template),
              "input_ids": tokenizer(prompt, add_special_tokens=False) -- no BOS is added for either
                           model (their templates start with <|im_start|>; raw text gets no BOS),
              "last_logits_top": [[id, logit]] top 64 of the last prompt position, descending,
              "last_logits_sample": {"ids": 256 ids = round(linspace(0, vocab_size-1, 256)), "values"},
              "greedy": 40 argmax ids continuing the prompt (KV-cached decode, no EOS stop),
              "greedy_text": tokenizer.decode(greedy) (informative only),
              "greedy_gaps": top1 - top2 logit at each greedy step (step 0 = last prompt position),
              "first_near_tie": first step index whose gap < 0.05, or null. A Rust implementation that
                     multiplies the same dequantized weights in f32 should match "greedy" at least up to
                     that step; after it, divergence is tolerable.}]}
Logits are f32 values rounded to 7 significant digits.

Numerics notes for the Rust side:
  * transformers dequantizes every GGUF tensor to f32 (gguf-py dequantize) and computes in f32 with float
    activations. llama.cpp instead multiplies quantized weights by quantized (Q8) activations, so llama.cpp
    logits differ from these by ~1e-2..1e-1; a candle implementation that dequantizes (or uses QMatMul with
    f32 activations) is expected to be close to these (~1e-3 relative).
  * arch `llama` (smollm2): llama.cpp's convert_hf_to_gguf.py permutes the rows of attn_q / attn_k
    (per head, the two rotary halves are interleaved) so llama.cpp can apply "normal"/interleaved RoPE
    (rotate pairs (2i, 2i+1)). transformers un-permutes them on load and applies neox-style rotate_half
    (pairs (i, i + head_dim/2)). Either (a) undo the permutation and use rotate_half, or (b) keep the GGUF
    rows and use interleaved RoPE; both give these logits. Un-permute for a [n_head*hd, in] weight:
    w.reshape(n_head, hd/2, 2, in).transpose(1, 2).reshape(n_head*hd, in)  (k: n_head = head_count_kv).
    Permuting rows is valid on quantized data too (blocks run along the input dim).
  * arch `qwen2` (qwen2): no permutation; neox RoPE (rotate_half) on the GGUF rows as stored. q/k/v have
    f32 biases (attn_q.bias, ...); attn_output has none.
  * Embeddings: smollm2 has no output.weight (tied: lm_head = token_embd, stored Q8_0); qwen2 *has*
    output.weight (Q8_0) distinct from token_embd (Q5_0) -- use output.weight when present.
  * rms eps comes from GGUF f32 metadata (1e-5 / 1e-6 as f32); rope theta from {arch}.rope.freq_base.
  * Qwen's logits width is 151936 (> tokenizer's token count): padded rows exist and are in the sample.

Seeds: none needed (greedy, fixed prompts). Run: python make_gguf_fixtures.py [smollm2|qwen2]...
"""
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch

torch.set_num_threads(int(os.environ.get("REF_THREADS", "2")))

import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.cache_utils import DynamicCache  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf")
CACHE = os.environ.get("NANBEIGE_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "nanbeige")
MODELS = os.path.join(CACHE, "models")
FILES = {
    "smollm2": ("SmolLM2-135M-Instruct.Q4_1.gguf", "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    "qwen2": ("Qwen2.5-Coder-0.5B-Instruct.gguf", "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
}
TOP_K = 64
N_SAMPLE = 256
N_GREEDY = 40
NEAR_TIE = 0.05

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"},
                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}

CASES = [
    dict(name="chat_capital", kind="chat",
         messages=[{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]),
    dict(name="chat_code", kind="chat",
         messages=[{"role": "system", "content": "You are a concise coding assistant."},
                   {"role": "user", "content": "Write a Python function that checks whether a number is prime."}]),
    dict(name="chat_multiturn", kind="chat",
         messages=[{"role": "user", "content": "Hi! Can you help me plan a picnic?"},
                   {"role": "assistant", "content": "Of course! Where and when would you like to have it?"},
                   {"role": "user", "content": "In the park on Saturday. What food should I bring?"}]),
    dict(name="chat_tools", kind="chat", tools=[WEATHER_TOOL],
         messages=[{"role": "user", "content": "What's the weather like in Paris right now?"}]),
    dict(name="raw_prose", kind="raw",
         prompt="The old lighthouse keeper climbed the spiral staircase every evening, counting the steps "
                "as his father had taught him. At the top, he polished the great lens until it gleamed, and"),
    dict(name="raw_code", kind="raw",
         prompt="def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n"
                "    return"),
    dict(name="raw_numbers", kind="raw", prompt="1, 2, 3, 5, 8, 13, 21, 34,"),
    dict(name="raw_chinese", kind="raw", prompt="北京是中华人民共和国的首都，也是一座历史悠久的城市。它的著名景点包括"),
    dict(name="raw_long", kind="raw",
         prompt=("In the beginning of the project, the team wrote down every requirement on index cards and "
                 "pinned them to a large cork board. Each morning they gathered in front of it, moved the cards "
                 "that were done to the right, and argued about the ones that were stuck. ") * 4
         + "After three weeks of this routine, the board looked"),
]


def r7(x):
    return float(f"{x:.7g}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@torch.no_grad()
def run_case(model, tok, case, vocab):
    c = {"name": case["name"], "kind": case["kind"]}
    if case["kind"] == "chat":
        kw = {"tools": case["tools"]} if case.get("tools") else {}
        prompt = tok.apply_chat_template(case["messages"], add_generation_prompt=True, tokenize=False, **kw)
        c["messages"] = case["messages"]
        if case.get("tools"):
            c["tools"] = case["tools"]
    else:
        prompt = case["prompt"]
    ids = tok(prompt, add_special_tokens=False).input_ids
    c["prompt"] = prompt
    c["input_ids"] = ids

    cache = DynamicCache(config=model.config)
    out = model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True)
    last = out.logits[0, -1].float()
    assert last.shape[0] == vocab and torch.isfinite(last).all()
    top = torch.topk(last, TOP_K)
    c["last_logits_top"] = [[int(i), r7(v)] for v, i in zip(top.values.tolist(), top.indices.tolist())]
    sample_ids = np.round(np.linspace(0, vocab - 1, N_SAMPLE)).astype(int).tolist()
    c["last_logits_sample"] = {"ids": sample_ids, "values": [r7(v) for v in last[sample_ids].tolist()]}

    toks, gaps = [], []
    logits = last
    for step in range(N_GREEDY):
        t2 = torch.topk(logits, 2).values
        gaps.append(float(t2[0] - t2[1]))
        t = int(torch.argmax(logits))
        toks.append(t)
        if step + 1 < N_GREEDY:
            out = model(input_ids=torch.tensor([[t]]), cache=cache, use_cache=True)
            logits = out.logits[0, -1].float()
            assert torch.isfinite(logits).all()
    c["greedy"] = toks
    c["greedy_text"] = tok.decode(toks)
    c["greedy_gaps"] = [r7(g) for g in gaps]
    near = [i for i, g in enumerate(gaps) if g < NEAR_TIE]
    c["first_near_tie"] = near[0] if near else None

    # consistency: a full (uncached) recompute must agree with the cached decode before the first near-tie
    full = model(input_ids=torch.tensor([ids + toks[:-1]]), use_cache=False).logits[0, len(ids) - 1:].float()
    re = full.argmax(-1).tolist()
    upto = c["first_near_tie"] if c["first_near_tie"] is not None else N_GREEDY
    assert re[:upto] == toks[:upto], f"{case['name']}: cached vs full recompute disagree before near-tie"
    c_diff = float((full[0] - last).abs().max())
    return c, c_diff


def main(names):
    os.makedirs(OUT, exist_ok=True)
    for name in names:
        t0 = time.time()
        fname, want_sha = FILES[name]
        path = os.path.join(MODELS, fname)
        digest = sha256(path)
        assert digest == want_sha, f"{fname}: sha256 {digest} != {want_sha}"
        tok = AutoTokenizer.from_pretrained(MODELS, gguf_file=fname)
        model = AutoModelForCausalLM.from_pretrained(MODELS, gguf_file=fname, dtype=torch.float32,
                                                     attn_implementation="eager")
        model.eval()
        vocab = model.config.vocab_size
        t_load = time.time() - t0
        lm = model.lm_head.weight
        emb = model.model.embed_tokens.weight
        tied = lm.data_ptr() == emb.data_ptr()
        ref = {"model_file": fname, "sha256": digest, "arch": model.config.model_type, "vocab_size": vocab,
               "eos_token_id": model.config.eos_token_id, "tied_embeddings": tied,
               "transformers_version": transformers.__version__, "torch_version": torch.__version__.split("+")[0],
               "near_tie_threshold": NEAR_TIE, "cases": []}
        for case in CASES:
            tc = time.time()
            c, d = run_case(model, tok, case, vocab)
            ref["cases"].append(c)
            print(f"[{name}] {c['name']:15} n_ids={len(c['input_ids']):4} first_near_tie={c['first_near_tie']} "
                  f"min_gap={min(c['greedy_gaps']):.3g} top1={c['last_logits_top'][0]} cache_vs_full={d:.2e} "
                  f"{time.time() - tc:.1f}s  {c['greedy_text'][:60]!r}")
        out = os.path.join(OUT, name + ".json")
        with open(out, "w") as f:
            json.dump(ref, f, ensure_ascii=False, separators=(",", ":"))
        print(f"[{name}] tied={tied} load {t_load:.1f}s, total {time.time() - t0:.1f}s, "
              f"{os.path.getsize(out)} bytes -> {out}")
        del model


if __name__ == "__main__":
    main(sys.argv[1:] or list(FILES))
