#!/usr/bin/env python3
"""Preference pairs from a verifiable eval log: for every problem where the model's own samples
(`nanbeige eval ... --samples K --temperature 1 --out LOG`) both passed and failed, pair a passing
reply (chosen) with a failing one (rejected). These on-policy pairs feed `nanbeige train rm` and
`nanbeige train dpo`. Standard library only.

  pairs_from_eval.py LOG.jsonl [--per-item N] [--seed S] > pairs.jsonl
"""
import argparse
import json
import random
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--per-item", type=int, default=2, help="at most this many pairs per problem")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    items = mixed = pairs = 0
    with open(a.log) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            items += 1
            # A reply is preferred only if it passed; replies cut at the token limit are left out.
            done = [s for s in r["samples"] if s.get("finish") == "stop"]
            good = [s["text"] for s in done if s["score"] >= 1.0]
            bad = [s["text"] for s in done if s["score"] <= 0.0]
            if not good or not bad:
                continue
            mixed += 1
            rng.shuffle(good)
            rng.shuffle(bad)
            for k in range(min(a.per_item, max(len(good), len(bad)))):
                prompt = [{"role": "user", "content": r["prompt"]}]
                rec = {
                    "prompt": prompt,
                    "chosen": {"role": "assistant", "content": good[k % len(good)]},
                    "rejected": {"role": "assistant", "content": bad[k % len(bad)]},
                }
                print(json.dumps(rec))
                pairs += 1
    print(f"{items} problems, {mixed} with both a passing and a failing reply: {pairs} pairs", file=sys.stderr)


if __name__ == "__main__":
    main()
