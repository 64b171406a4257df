#!/usr/bin/env python3
"""Training reference: loss, gradients and one AdamW step from PyTorch for the tiny models.

Writes tests/fixtures/train/grads.json:
  {"<model>": {"seqs": [[ids...], [ids...]], "masks": [[0/1 per token], ...],
               "loss": float,
               "grads": {"<hf name>": {"norm": float, "head": [first 8], "tail": [last 8]}},
               "adamw": {"lr", "betas", "eps", "weight_decay",
                         "after": {"<hf name>": {"head": [first 8 of the updated weight]}}}}}

Models: tests/fixtures/tiny/nanbeige-tiny (untied head, GQA 5:1) and qwen2-tiny (q/k/v biases, tied
embeddings), f32, attn_implementation="eager".

Batch: two sequences (lengths 21 and 13, ids numpy default_rng(11)/(12)), each run on its own
(positions from 0, causal). Token j+1 is trained when masks[s][j+1] == 1 (masks from
default_rng(13)/(14), p=0.7, first token 0). loss = sum over both sequences of
-log p(ids[j+1] | ids[..=j]) over trained tokens / number of trained tokens. The Rust side packs the
two sequences into ONE row (positions restart, block-diagonal mask), so equal numbers also check the
packing. AdamW: torch.optim.AdamW(lr=1e-2, betas=(0.9, 0.95), eps=1e-8), weight_decay 0.1 on
matrices (dim >= 2) and 0 on vectors, one step from these gradients.

Run: python make_train_fixture.py   (~2 s)
"""
import json
import os

import numpy as np
import torch
from transformers import AutoModelForCausalLM

torch.set_num_threads(int(os.environ.get("REF_THREADS", "2")))
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TINY = os.path.join(ROOT, "tests", "fixtures", "tiny")
OUT = os.path.join(ROOT, "tests", "fixtures", "train")
LENS = (21, 13)


def r8(x):
    return [float(f"{v:.8g}") for v in x]


def run(name):
    model = AutoModelForCausalLM.from_pretrained(os.path.join(TINY, name), dtype=torch.float32,
                                                 attn_implementation="eager")
    model.train()  # no dropout in these configs; train() only matters for the flag
    vocab = model.config.vocab_size
    seqs = [np.random.default_rng(11 + i).integers(3, vocab, n).tolist() for i, n in enumerate(LENS)]
    masks = []
    for i, n in enumerate(LENS):
        m = (np.random.default_rng(13 + i).random(n) < 0.7).astype(int).tolist()
        m[0] = 0
        masks.append(m)
    total = sum(sum(m[1:]) for m in masks)
    loss = 0.0
    for ids, m in zip(seqs, masks):
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
        lp = torch.log_softmax(logits[:-1].float(), dim=-1)
        tok = lp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        loss = loss + -(tok * torch.tensor(m[1:], dtype=torch.float32)).sum()
    loss = loss / total
    loss.backward()
    grads = {}
    for n, p in model.named_parameters():
        g = p.grad.detach().flatten()
        grads[n] = {"norm": float(g.norm()), "head": r8(g[:8].tolist()), "tail": r8(g[-8:].tolist())}
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    opt.step()
    after = {n: {"head": r8(p.detach().flatten()[:8].tolist())} for n, p in model.named_parameters()}
    return {"seqs": seqs, "masks": masks, "loss": float(loss), "grads": grads,
            "adamw": {"lr": 1e-2, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1, "after": after}}


def main():
    os.makedirs(OUT, exist_ok=True)
    out = {name: run(name) for name in ("nanbeige-tiny", "qwen2-tiny")}
    with open(os.path.join(OUT, "grads.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    for name, v in out.items():
        print(name, "loss", v["loss"], "params", len(v["grads"]))


if __name__ == "__main__":
    main()
