#!/usr/bin/env python3
"""Check that an HF directory written by nanbeige (training output, or `nanbeige train export` of a
GGUF) loads in transformers and is the same model: for every case of the GGUF fixture
(tests/fixtures/gguf/<fixture>.json, made by transformers from the original GGUF), the directory's
tokenizer must encode the prompt to the same ids, its chat template must render the same prompt, and
the last-position logits must match the fixture's top-64 and sampled values.

  check_export.py MODEL_DIR [--fixture smollm2] [--tol 1e-3]

Only meaningful for an untrained export (a trained model's logits differ by design); for trained
outputs use --load-only, which loads model + tokenizer + template and runs one chat prompt.
"""
import argparse
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--fixture", default="smollm2")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--load-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("REF_THREADS", "2")))
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    model.eval()
    if args.load_only:
        msgs = [{"role": "user", "content": "What is 2 + 3?"}]
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
        out = model.generate(ids, max_new_tokens=40, do_sample=False)
        print(json.dumps({"ok": True, "reply": tok.decode(out[0, ids.shape[1]:], skip_special_tokens=False)}))
        return
    fx = json.load(open(os.path.join(ROOT, "tests", "fixtures", "gguf", args.fixture + ".json")))
    worst, bad = 0.0, []
    for case in fx["cases"]:
        if case["kind"] == "chat":
            text = tok.apply_chat_template(case["messages"], tools=case.get("tools"), add_generation_prompt=True,
                                           tokenize=False)
            if text != case["prompt"]:
                bad.append(f"{case['name']}: chat template renders differently")
        ids = tok(case["prompt"], add_special_tokens=False)["input_ids"]
        if ids != case["input_ids"]:
            bad.append(f"{case['name']}: tokenizer gives different ids")
        with torch.no_grad():
            last = model(input_ids=torch.tensor([case["input_ids"]])).logits[0, -1]
        for i, v in case["last_logits_top"]:
            worst = max(worst, abs(float(last[i]) - v))
        for i, v in zip(case["last_logits_sample"]["ids"], case["last_logits_sample"]["values"]):
            worst = max(worst, abs(float(last[i]) - v))
    print(json.dumps({"cases": len(fx["cases"]), "max_abs_logit_diff": worst, "problems": bad}))
    if bad or worst > args.tol:
        sys.exit(1)


if __name__ == "__main__":
    main()
