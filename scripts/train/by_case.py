#!/usr/bin/env python3
"""Held-out `add` accuracy split by case, for two `nanbeige eval math --gen add --out` logs of the
same problems (before, after): additions, subtractions whose column arithmetic needs a borrow, and
subtractions that need none. RL on this task has learned to skip borrows (docs/TRAINING.md), which
the overall pass rate hides: it shows here as borrow cases falling while no-borrow cases rise.
Counts are sums of each problem's pass@1 (the mean over its samples). For greedy logs (one sample
per problem) it also counts, per case, the problems right only before, and of those how many the
after model worked column for column exactly as before, failing only in the closing "So ..." line.
And for every reply, whether its closing line reads back the digits its columns wrote (`readback`):
columns right but read back wrong is a failure of the closing line alone. Standard library only.

  by_case.py BEFORE.jsonl AFTER.jsonl
"""
import json
import re
import sys


def problem(prompt):
    """(a, op, b) of an `add` prompt ("What is a op b?")."""
    a, op, b = re.search(r"(\d+) ([-+]) (\d+)", prompt).groups()
    return int(a), op, int(b)


def case(prompt):
    a, op, b = problem(prompt)
    if op == "+":
        return "addition"
    # Column by column from the ones: the first column whose top digit is the smaller needs a borrow.
    while b:
        if a % 10 < b % 10:
            return "subtraction, needs a borrow"
        a, b = a // 10, b // 10
    return "subtraction, no borrow"


def load(path):
    return {r["id"]: r for r in map(json.loads, open(path))}


def main():
    before, after = load(sys.argv[1]), load(sys.argv[2])
    rows = {}
    for i, r in before.items():
        if i not in after:
            continue
        row = rows.setdefault(case(r["prompt"]), [0.0, 0.0, 0, 0, 0])
        row[0] += r["pass1"]
        row[1] += after[i]["pass1"]
        row[2] += 1
        if r["n"] == 1 and r["correct"] and not after[i]["correct"]:
            row[3] += 1
            row[4] += worked(r) == worked(after[i])
    for name, (b, a, n, lost, same) in sorted(rows.items()):
        print(f"{name:28} {n:4} problems: right {b:6.1f} before, {a:6.1f} after", end="")
        print(f"; right only before {lost}, of them worked as before up to 'So' {same}" if lost else "")
    for label, log in (("before", before), ("after", after)):
        tally = {}
        for i, r in log.items():
            if i in before and i in after:
                for sample in r["samples"]:
                    key = (case(r["prompt"]), readback(sample["text"], problem(r["prompt"])))
                    tally[key] = tally.get(key, 0) + 1
        print(f"{label}, replies by columns and closing line:")
        for name in sorted({k for k, _ in tally}):
            print(f"  {name:28} " + ", ".join(f"{k} {tally.get((name, k), 0)}" for k in READBACK))


READBACK = ("columns right, read back", "columns right, misread", "columns wrong, read back",
            "columns wrong, misread", "unparsed")


def readback(text, problem):
    """One of READBACK for a worked `add` reply to `problem` (a, op, b): whether the digits its
    column lines write (the ones first, plus "The last carry 1 becomes the leading digit") make the
    true result, and whether its closing "So ... = C" line states the number they make."""
    work = text.split("</think>")[0]
    digits, lead = [], ""
    for line in work.split("\n"):
        if re.match(r"\w+: ", line) and "=" in line:
            d = re.search(r"write (\d)", line) or re.search(r"= \d*(\d)\.?\s*$", line)
            if not d:
                return "unparsed"
            digits.append(d.group(1))
        carry = re.match(r"The last carry (\d) becomes", line)
        lead = carry.group(1) if carry else lead
    closing = re.search(r"\nSo [^\n]*= (-?\d+)", work)
    if not closing or not digits:
        return "unparsed"
    said = closing.group(1)
    a, op, b = problem
    written = int(lead + "".join(reversed(digits)))
    right = written == (a + b if op == "+" else a - b)
    return READBACK[(0 if right else 2) + (written != int(said))]


def worked(record):
    """The column lines of a greedy reply: everything before its closing "So A op B = C" line."""
    return record["samples"][0]["text"].split("\nSo ")[0]


if __name__ == "__main__":
    main()
