#!/usr/bin/env python3
"""Random-weight tiny HF model directories + transformers reference outputs.

Writes, under tests/fixtures/tiny/:
  <name>/config.json, model.safetensors (f32), generation_config.json
  <name>.json  {"model": name, "dtype": "float32"|"bfloat16", "input_ids": [64 ids],
                "logits": [[vocab floats] x 64 positions], "greedy": [32 ids],
                "greedy_min_gap": float, "f64_max_abs_diff": float}

Models (names -> see CONFIGS below):
  nanbeige-tiny          LlamaForCausalLM, Nanbeige4.1-3B ratios (GQA 5:1 with 2 kv heads, rope_theta 7e7,
                         untied lm_head, no biases, intermediate 4.1 x hidden), 3 layers
  nanbeige-tiny-bf16     same weights rounded to bf16; reference computed by transformers in bf16
  nanbeige-tiny-sharded  same f32 weights as nanbeige-tiny, saved as 2 safetensors shards + index
  qwen2-tiny             Qwen2ForCausalLM: q/k/v biases (no o_proj bias), tied embeddings, rope_theta 1e6
  llama3-rope-tiny, linear-rope-tiny, yarn-rope-tiny
                         2-layer llama with rope_scaling (original_max_position_embeddings 64 so the
                         scaling changes frequencies within a 64-token prompt); head_dim 16 so all llama3
                         bands / yarn ramp regions are exercised.

config.json is written in the classic (transformers 4.x / Nanbeige) format: top-level "rope_theta",
"rope_scaling" (or null), "torch_dtype". Transformers 5 itself would write "rope_parameters" (with
rope_theta inside) and "dtype"; the script re-loads each written directory with transformers and checks
that the logits are bit-identical to the in-memory model, so the classic config means exactly this.

Reference numerics: f32, attn_implementation="eager", positions 0..63, no padding / attention mask.
"logits" is the full forward over the 64 prompt ids. "greedy" is 32 argmax tokens after the prompt,
decoded incrementally with a KV cache (use_cache=True, do_sample=False semantics), never stopping at
EOS. Every f32 greedy step's top-2 logit gap is checked > 1e-2 (weights reseeded otherwise).
"f64_max_abs_diff" = max |logits_f32 - logits_f64| over the prompt forward: the intrinsic f32 noise.

Seeds: weights torch.Generator(seed=1000 + i + 100*attempt) for model i; input ids numpy
default_rng(seed=7 + i). Run: python make_tiny_models.py  (from anywhere; paths are repo-relative).
"""
import copy
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch

torch.set_num_threads(int(os.environ.get("REF_THREADS", "2")))

from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.cache_utils import DynamicCache  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "tiny")
PROMPT_LEN = 64
GREEDY_LEN = 32
MIN_GAP = 1e-2  # required top-2 logit gap at every f32 greedy step
VOCAB = 384

NANBEIGE = dict(
    arch="llama",
    vocab_size=VOCAB,
    hidden_size=80,
    intermediate_size=328,  # 4.1 x hidden (Nanbeige: 10496 / 2560)
    num_hidden_layers=3,
    num_attention_heads=10,
    num_key_value_heads=2,  # GQA 5:1 like Nanbeige 20:4
    head_dim=8,
    rope_theta=70000000.0,
    rope_scaling=None,
    rms_norm_eps=1e-5,
    max_position_embeddings=4096,
    tie_word_embeddings=False,
    attention_bias=False,
    mlp_bias=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

# rope-scaling variants: head_dim 16 (8 frequencies) so that with theta 7e7 and original context 64 the
# llama3 high/medium/low bands and the yarn extrapolation/ramp/interpolation regions are all non-empty.
# Smaller than nanbeige-tiny (3 heads : 1 kv head, intermediate 128) to keep the fixtures small.
ROPE_BASE = dict(NANBEIGE, hidden_size=48, num_attention_heads=3, num_key_value_heads=1, head_dim=16,
                 intermediate_size=128, num_hidden_layers=2)

QWEN2 = dict(
    arch="qwen2",
    vocab_size=VOCAB,
    hidden_size=56,
    intermediate_size=304,  # Qwen2.5-0.5B: 4864 / 896 = 5.43
    num_hidden_layers=2,
    num_attention_heads=7,  # 14:2 scaled to 7:1
    num_key_value_heads=1,
    rope_theta=1000000.0,
    rope_scaling=None,
    rms_norm_eps=1e-6,
    max_position_embeddings=32768,
    tie_word_embeddings=True,
    use_sliding_window=False,
    sliding_window=32768,
    max_window_layers=2,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

CONFIGS = [
    ("nanbeige-tiny", NANBEIGE),
    ("qwen2-tiny", QWEN2),
    ("llama3-rope-tiny", dict(ROPE_BASE, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64})),
    ("linear-rope-tiny", dict(ROPE_BASE, rope_scaling={"rope_type": "linear", "factor": 4.0})),
    # max_position_embeddings = factor x original (transformers warns when they disagree; it then uses the
    # explicit factor anyway, so the value does not change the numerics)
    ("yarn-rope-tiny", dict(ROPE_BASE, max_position_embeddings=256, rope_scaling={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64})),
]


def classic_config(spec, dtype):
    """config.json content in classic HF format."""
    c = {k: v for k, v in spec.items() if k != "arch"}
    if spec["arch"] == "llama":
        c.update(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
                 initializer_range=0.02, use_cache=True, pretraining_tp=1, attention_dropout=0.0)
    else:
        c.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_act="silu",
                 initializer_range=0.02, use_cache=True, attention_dropout=0.0)
    c["torch_dtype"] = dtype
    return dict(sorted(c.items()))


def build_model(spec, dtype=torch.float32):
    kw = {k: v for k, v in spec.items() if k not in ("arch", "rope_theta", "rope_scaling")}
    rope = dict(spec["rope_scaling"] or {"rope_type": "default"})
    rope["rope_theta"] = spec["rope_theta"]
    cls_cfg, cls = (LlamaConfig, LlamaForCausalLM) if spec["arch"] == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    cfg = cls_cfg(rope_parameters=rope, **kw)
    cfg._attn_implementation = "eager"
    model = cls(cfg).to(dtype)
    model.eval()
    return model


@torch.no_grad()
def init_weights(model, seed):
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if name.endswith("norm.weight"):
            v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        elif name.endswith(".bias"):
            v = 0.3 * torch.randn(p.shape, generator=g)  # large so a missing bias is visible
        elif name == "lm_head.weight" or (name == "model.embed_tokens.weight" and model.config.tie_word_embeddings):
            v = 0.25 * torch.randn(p.shape, generator=g)  # logits std ~2
        elif model.config.tie_word_embeddings and name.endswith(("o_proj.weight", "down_proj.weight")):
            # with tied embeddings the residual stream starts at the (large) output embedding of the input
            # token; stronger layer outputs keep greedy decoding from just repeating the input token
            v = 0.25 * torch.randn(p.shape, generator=g)
        elif name.endswith(("q_proj.weight", "k_proj.weight")):
            v = 0.15 * torch.randn(p.shape, generator=g)  # fairly peaked attention so rope matters
        else:
            v = 0.08 * torch.randn(p.shape, generator=g)
        p.copy_(v.to(p.dtype))
    if model.config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


@torch.no_grad()
def forward_logits(model, ids):
    return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()


@torch.no_grad()
def greedy(model, ids, n):
    """Incremental greedy decode with a KV cache; returns (tokens, top-2 gaps)."""
    cache = DynamicCache(config=model.config)
    out = model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True)
    toks, gaps = [], []
    for _ in range(n):
        last = out.logits[0, -1].float()
        top2 = torch.topk(last, 2).values
        gaps.append(float(top2[0] - top2[1]))
        t = int(torch.argmax(last))
        toks.append(t)
        out = model(input_ids=torch.tensor([[t]]), cache=cache, use_cache=True)
    return toks, gaps


def r7(x):
    return float(f"{x:.7g}")


def save_dir(model, spec, path, dtype_name, max_shard_size=None):
    if os.path.isdir(path):
        shutil.rmtree(path)
    kw = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(path, **kw)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(classic_config(spec, dtype_name), f, indent=2)
        f.write("\n")
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": spec["bos_token_id"], "eos_token_id": spec["eos_token_id"],
                   "pad_token_id": spec["pad_token_id"], "do_sample": False}, f, indent=2)
        f.write("\n")


def check_reload(path, dtype, ids, expected):
    m = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    m.eval()
    got = forward_logits(m, ids)
    d = float((got - expected).abs().max())
    assert d == 0.0, f"{path}: reloaded logits differ by {d}"
    return m


def write_ref(name, model, ids, dtype_name, f64_diff=None):
    logits = forward_logits(model, ids)
    assert torch.isfinite(logits).all()
    toks, gaps = greedy(model, ids, GREEDY_LEN)
    # cross-check the cached decode against a full recompute
    full = forward_logits(model, ids + toks)
    recomputed = full[PROMPT_LEN - 1:-1].argmax(-1).tolist()
    assert recomputed == toks, f"{name}: cached greedy != recompute"
    ref = {"model": name, "dtype": dtype_name, "input_ids": ids,
           "logits": [[r7(v) for v in row] for row in logits.tolist()],
           "greedy": toks, "greedy_min_gap": r7(min(gaps))}
    if f64_diff is not None:
        ref["f64_max_abs_diff"] = r7(f64_diff)
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(ref, f, separators=(",", ":"))
    return logits, toks, gaps


def main():
    t0 = time.time()
    os.makedirs(OUT, exist_ok=True)
    summary = {}
    rope_logits = {}
    for i, (name, spec) in enumerate(CONFIGS):
        ids = np.random.default_rng(7 + i).integers(3, VOCAB, PROMPT_LEN).tolist()
        for attempt in range(20):
            model = build_model(spec)
            init_weights(model, 1000 + i + 100 * attempt)
            toks, gaps = greedy(model, ids, GREEDY_LEN)
            if min(gaps) > MIN_GAP:
                break
            print(f"{name}: attempt {attempt} min gap {min(gaps):.2e}, reseeding")
        else:
            sys.exit(f"{name}: no seed without near-ties")
        path = os.path.join(OUT, name)
        save_dir(model, spec, path, "float32")
        logits = forward_logits(model, ids)
        check_reload(path, torch.float32, ids, logits)
        m64 = copy.deepcopy(model).to(torch.float64)
        with torch.no_grad():
            l64 = m64(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
        f64_diff = float((logits.double() - l64).abs().max())
        logits, toks, gaps = write_ref(name, model, ids, "float32", f64_diff)
        summary[name] = dict(seed=1000 + i + 100 * attempt, logit_std=float(logits.std()),
                             logit_absmax=float(logits.abs().max()), min_gap=min(gaps), f64_diff=f64_diff,
                             greedy=toks)
        if spec["rope_scaling"] is not None:
            # same weights, rope scaling removed: logits must differ
            plain = build_model(dict(spec, rope_scaling=None))
            plain.load_state_dict(model.state_dict())
            d = float((forward_logits(plain, ids) - logits).abs().max())
            summary[name]["diff_vs_unscaled"] = d
            assert d > 1e-2, f"{name}: rope scaling had no effect ({d})"
            inv = model.model.rotary_emb.inv_freq
            inv0 = plain.model.rotary_emb.inv_freq
            summary[name]["inv_freq_ratio"] = [r7(v) for v in (inv / inv0).tolist()]
            summary[name]["attention_scaling"] = float(model.model.rotary_emb.attention_scaling)
            rope_logits[name] = logits

        if name == "nanbeige-tiny":
            # sharded f32 copy (same weights, same reference)
            sp = os.path.join(OUT, name + "-sharded")
            total = sum(p.numel() * 4 for p in model.parameters())
            for frac in (0.55, 0.6, 0.7, 0.5, 0.8):
                save_dir(model, spec, sp, "float32", max_shard_size=int(total * frac))
                shards = sorted(f for f in os.listdir(sp) if f.endswith(".safetensors"))
                if shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]:
                    break
            else:
                sys.exit("could not make exactly 2 shards")
            check_reload(sp, torch.float32, ids, logits)
            write_ref(name + "-sharded", model, ids, "float32", f64_diff)
            # bf16 copy, reference computed by transformers in bf16. The reference model is the one
            # re-loaded with from_pretrained(dtype=bfloat16): weights bf16, rotary inv_freq kept f32
            # (casting the in-memory model with .to(bf16) would also round inv_freq to bf16).
            bp = os.path.join(OUT, name + "-bf16")
            save_dir(copy.deepcopy(model).to(torch.bfloat16), spec, bp, "bfloat16")
            mb = AutoModelForCausalLM.from_pretrained(bp, dtype=torch.bfloat16, attn_implementation="eager")
            mb.eval()
            assert mb.model.rotary_emb.inv_freq.dtype == torch.float32
            lb, tb, gb = write_ref(name + "-bf16", mb, ids, "bfloat16")
            summary[name + "-bf16"] = dict(max_abs_diff_vs_f32=float((lb - logits).abs().max()),
                                           min_gap=min(gb), greedy=tb,
                                           greedy_agrees_with_f32=sum(a == b for a, b in zip(tb, toks)))
    for name, s in summary.items():
        print(name, json.dumps(s))
    sizes = {}
    for root, _, files in os.walk(OUT):
        for f in files:
            sizes[os.path.relpath(os.path.join(root, f), OUT)] = os.path.getsize(os.path.join(root, f))
    for k in sorted(sizes):
        print(f"{sizes[k]:>9}  tiny/{k}")
    print(f"total {sum(sizes.values())} bytes; {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
