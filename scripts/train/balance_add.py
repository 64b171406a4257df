#!/usr/bin/env python3
"""Rebalance `nanbeige data gen add` problems by case: SHARE of the output are subtractions that need
a borrow, the rest additions and no-borrow subtractions in the order they were drawn. The generator
gives borrow cases about 31%; RL on it learned to skip borrows (docs/TRAINING.md, runs 3 and 8), so
this file lets a run weight the case the shortcut breaks. Standard library only.

  balance_add.py IN.jsonl N SHARE > OUT.jsonl     (e.g. IN from `data gen add --n 6000`, N 2000, SHARE 0.5)
"""
import json
import sys

from by_case import case


def main():
    try:
        src, n, share = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
        assert len(sys.argv) == 4 and n > 0 and 0 <= share <= 1
    except (IndexError, ValueError, AssertionError):
        sys.exit("usage: balance_add.py IN.jsonl N SHARE  (N > 0, SHARE between 0 and 1)")
    want_borrow = round(n * share)
    borrow, rest = [], []
    for lineno, line in enumerate(open(src), 1):
        try:
            r = json.loads(line)
            prompt = next(m["content"] for m in r["messages"] if m["role"] == "user")
            c = case(prompt)
        except (ValueError, KeyError, TypeError, StopIteration, AttributeError):
            sys.exit(f"{src}:{lineno}: not a `data gen add` problem")
        (borrow if c == "subtraction, needs a borrow" else rest).append(line)
    if len(borrow) < want_borrow or len(rest) < n - want_borrow:
        sys.exit(f"{src}: {len(borrow)} borrow cases and {len(rest)} others, too few for {n} at share {share}")
    # Interleave so that any prefix of the file (and the trainer's draws from it) keeps the share.
    out, b, r = [], 0, 0
    for i in range(n):
        if b < want_borrow and (r >= n - want_borrow or b <= i * share):
            out.append(borrow[b]); b += 1
        else:
            out.append(rest[r]); r += 1
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main()
