#!/usr/bin/env python3
"""Training throughput side by side: PyTorch (transformers) vs `nanbeige train bench`, forward +
backward of one causal-LM batch on CPU, same model weights and same tokens.

  train_throughput.py MODEL_DIR [--tokens 512] [--runs 3] [--threads 2] [--nanbeige BIN]

MODEL_DIR is an HF directory (e.g. SmolLM2-135M-Instruct converted from its GGUF by
`nanbeige train sft --steps 0`-style saving, or any HF Llama dir). Batch: one sequence of TOKENS ids
(i * 7919 + 13) mod vocab, every next-token prediction trained, mean cross-entropy; the same batch
`nanbeige train bench` builds. PyTorch runs in f32, attn_implementation="eager" (the same math as
ours: explicit scores and softmax) and also "sdpa" (its fused attention). Reports median seconds
per forward+backward and tokens/s, and the first loss of each (they must agree).
Run with the refvenv python (torch, transformers).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def torch_bench(model_dir, tokens, runs, warmup, threads, attn):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attn)
    model.train()
    vocab = model.config.vocab_size
    ids = torch.tensor([[(i * 7919 + 13) % vocab for i in range(tokens)]])
    times, loss0 = [], None
    for i in range(warmup + runs):
        model.zero_grad(set_to_none=True)
        t = time.perf_counter()
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits, ids[0, 1:])
        loss.backward()
        dt = time.perf_counter() - t
        if loss0 is None:
            loss0 = float(loss.detach())
        if i >= warmup:
            times.append(dt)
    med = statistics.median(times)
    return {"impl": f"pytorch-{attn}", "torch": torch.__version__, "threads": threads, "tokens": tokens,
            "loss": loss0, "fwd_bwd_s": times, "median_fwd_bwd_s": med, "tokens_per_s": tokens / med}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nanbeige", default=os.environ.get("NANBEIGE_BIN", "nanbeige"))
    args = ap.parse_args()
    results = []
    out = subprocess.run([args.nanbeige, "train", "bench", "--model", args.model_dir, "--tokens", str(args.tokens),
                          "--runs", str(args.runs), "--warmup", str(args.warmup), "--json"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"nanbeige train bench failed: {out.stderr.strip()}")
    results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(json.dumps(results[-1]), flush=True)
    for attn in ("eager", "sdpa"):
        results.append(torch_bench(args.model_dir, args.tokens, args.runs, args.warmup, args.threads, attn))
        print(json.dumps(results[-1]), flush=True)
    print(f"{'impl':<16} {'tokens':>6} {'loss':>9} {'s/fwd+bwd':>10} {'tokens/s':>9}")
    for r in results:
        print(f"{r['impl']:<16} {r['tokens']:>6} {r['loss']:>9.4f} {r['median_fwd_bwd_s']:>10.3f} {r['tokens_per_s']:>9.0f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
