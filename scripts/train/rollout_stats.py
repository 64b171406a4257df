#!/usr/bin/env python3
"""How the rewards of a watched pair-wise run (`nanbeige train pairwise --watch-checker`) rank the
checker's (right, wrong) pairs inside each group, read back from its OUT/rollouts.jsonl: by the
judge's own win rate, by the reward the policy was trained on, by a plain answer count (how many
replies of the group give the same answer) and by the vote (`--pool-answers vote`: the judge's win
rates summed over the replies with the same answer), ties counting half, replies cut at the token
limit unlabelled. Also: groups with no right reply, and how much of such a group its commonest
(wrong) answer holds; the spread of rewards; and what the vote would do under a quorum
(`--vote-quorum Q`): how many groups speak, how many of those lead with the checker's right answer,
and the share of the push (the sum of |reward - group mean|) that lands in groups with no right
reply; and, per step, how often an `add` reply's closing line ("So a + b = ...") restates the
question's numbers (a drift no reward looks at). From OUT/metrics.jsonl beside it: the watched pass
rate, KL and (with `--greedy-first`) the greedy replies' pass rate averaged over the first and second
half of the steps, and the groups kept; given OUT/metrics.jsonl itself (any RL run, GRPO too), only
that, and for an `add` run with `--greedy-first` the greedy replies right by case (by_case.py's) and
half. For `add` runs also: how often replies borrow in the ones column, when it needs a borrow and
when not, and how often those replies pass, by half; and the replies by columns and closing line
(by_case.py's `readback`) with how many of each passed, by half: a right answer from wrong columns
is rewarded, a faithful read-back of wrong columns punished. Standard library only.

  rollout_stats.py OUT/rollouts.jsonl | OUT/metrics.jsonl
"""
import collections
import json
import os
import re
import sys

from by_case import READBACK, case, readback


def ranked(values, labels):
    """Share of (right, wrong) pairs that `values` orders right (ties half), and the pair count."""
    got, n = 0.0, 0
    for vi, li in zip(values, labels):
        for vj, lj in zip(values, labels):
            if li is True and lj is False:
                n += 1
                got += 1.0 if vi > vj else 0.5 if vi == vj else 0.0
    return got, n


def quantile(xs, p):
    xs = sorted(xs)
    return xs[int(p * (len(xs) - 1))]


QUORUMS = (0.0, 0.5, 0.6)


def vote_shares(answers, win):
    """Each reply's answer's share of the group's total win rate (`--pool-answers vote`)."""
    total = sum(win) or 1.0
    votes = collections.Counter()
    for a, w in zip(answers, win):
        votes[a] += w
    return [(votes[a] if a is not None else w) / total for a, w in zip(answers, win)]


def main():
    if os.path.basename(sys.argv[1]) == "metrics.jsonl":
        halves(sys.argv[1])
        add_decisions(os.path.join(os.path.dirname(sys.argv[1]), "rollouts.jsonl"))
        return
    totals = collections.Counter()
    quorum = {q: collections.Counter() for q in QUORUMS}
    restated = collections.defaultdict(collections.Counter)
    rewards, spreads, wrong_top = [], [], []
    for line in open(sys.argv[1]):
        row = json.loads(line)
        replies = row["replies"]
        for r in replies:
            asked = re.search(r"(?:Add|Subtract) (\d+) [-+] (\d+)", r["text"])
            closing = re.search(r"So (\d+) [-+] (\d+) =", r["text"])
            if asked and closing:
                restated[row["step"]]["same"] += asked.groups() == closing.groups()
                restated[row["step"]]["n"] += 1
        answers = [r["extra"].get("answer") for r in replies]
        count = collections.Counter(a for a in answers if a is not None)
        labels = [None if r["truncated"] else r["passed"] for r in replies]
        reward = [r["reward"] for r in replies]
        win = [r["extra"]["win_rate"] for r in replies]
        shares = vote_shares(answers, win)
        columns = {
            "judge": win,
            "reward": reward,
            "count": [count.get(a, 0) if a is not None else 0 for a in answers],
            "vote": shares,
        }
        for name, values in columns.items():
            got, n = ranked(values, labels)
            totals[name] += got
            totals["pairs"] += n if name == "judge" else 0
        totals["groups"] += 1
        if not any(r["passed"] for r in replies):
            totals["no_right"] += 1
            totals["no_right_with_signal"] += max(reward) - min(reward) > 1e-9
            wrong_top.append(max(count.values(), default=0) / len(replies))
        rewards += reward
        spreads.append(max(reward) - min(reward))
        mean = sum(shares) / len(shares)
        push = sum(abs(v - mean) for v in shares)
        for q, t in quorum.items():
            if max(shares) < q or push < 1e-9:
                continue  # abstains: one reward for all, the group is dropped
            t["speak"] += 1
            t["lead_right"] += replies[shares.index(max(shares))]["passed"]
            t["push"] += push
            t["push_no_right"] += 0 if any(r["passed"] for r in replies) else push
    n = max(totals["pairs"], 1)
    print(f"{totals['pairs']} checker (right, wrong) pairs in {totals['groups']} groups, ranked right by:")
    for name in ("judge", "reward", "count", "vote"):
        print(f"  {name:6} {totals[name] / n:.3f}")
    share = sum(wrong_top) / max(len(wrong_top), 1)
    print(f"groups with no right reply: {totals['no_right']} ({totals['no_right_with_signal']} with a reward spread),"
          f" commonest answer holds {share:.3f} of such a group on average")
    print(f"rewards 5-95%: {quantile(rewards, 0.05):.3f} to {quantile(rewards, 0.95):.3f};"
          f" median spread in a group {quantile(spreads, 0.5):.3f}")
    for q, t in quorum.items():
        print(f"vote with quorum {q}: {t['speak']} groups speak, {t['lead_right']} lead with the right answer;"
              f" {t['push_no_right'] / max(t['push'], 1e-9):.3f} of the push lands in groups with no right reply")
    if restated:
        steps = " ".join(f"{s + 1}:{c['same'] / c['n']:.2f}" for s, c in sorted(restated.items()))
        print(f"closing line restates the question, by step: {steps}")
    metrics = os.path.join(os.path.dirname(sys.argv[1]), "metrics.jsonl")
    if os.path.exists(metrics):
        halves(metrics)
    add_decisions(sys.argv[1])


def halves(path):
    """Mean pass rate, KL, greedy pass rate, process and step credit's shares and counts and the
    share of negatives gated (if logged) over each half of the steps; groups kept."""
    steps = [json.loads(line) for line in open(path)]
    first, second = steps[: (len(steps) + 1) // 2], steps[(len(steps) + 1) // 2 :]
    for key, digits in (("pass_rate", 3), ("kl", 4), ("greedy_pass_rate", 3), ("process_cleared", 3),
                        ("passed_exact", 3), ("off_method", 2), ("negatives_gated", 3)):
        if any(key not in r for r in steps):
            continue
        means = [sum(r[key] for r in part) / max(len(part), 1) for part in (first, second)]
        print(f"{key} over steps 1-{len(first)} / {len(first) + 1}-{len(steps)}:"
              f" {means[0]:.{digits}f} / {means[1]:.{digits}f}")
    print(f"groups kept: {sum(r['groups_kept'] for r in steps)} of {sum(r['groups'] for r in steps)}")


def asked(group, text):
    """The `add` problem of a logged group as (a, op, b): its logged prompt, or for logs written
    before the prompt was logged, the problem `text` restates ("Subtract a - b ..."; replies
    restate it right nearly always). None for anything else."""
    user = [m["content"] for m in group.get("prompt", []) if m.get("role") == "user"]
    m = re.search(r"(\d+) ([-+]) (\d+)", user[0]) if user else None
    m = m or re.search(r"(?:Add|Subtract) (\d+) ([-+]) (\d+)", text)
    return (int(m.group(1)), m.group(2), int(m.group(3))) if m else None


def add_decisions(path):
    """The two `add` breakdowns of an RL run's rollouts.jsonl, read once."""
    if not os.path.exists(path):
        return
    groups = [json.loads(line) for line in open(path)]
    if groups:
        greedy_by_case(groups)
        ones_borrows(groups)
        readbacks(groups)


def readbacks(groups):
    """`add` replies by `readback` class (unparsed left out) and half: passed of all."""
    last = max(g["step"] for g in groups)
    tally = collections.defaultdict(lambda: [0, 0])
    for g in groups:
        for r in g["replies"]:
            problem = asked(g, r["text"])
            if problem:
                row = tally[(readback(r["text"], problem), g["step"] <= last // 2)]
                row[0] += r["passed"]
                row[1] += 1
    for kind in READBACK[:-1]:
        (p1, n1), (p2, n2) = tally[(kind, True)], tally[(kind, False)]
        print(f"replies with {kind}: passed {p1} of {n1} in the first half, {p2} of {n2} in the second")


def greedy_by_case(groups):
    """With --greedy-first on `add`: the greedy replies (the first of each group) right, by case and half."""
    if not groups[0].get("greedy_first"):
        return
    last = max(g["step"] for g in groups)
    tally = collections.defaultdict(lambda: [0, 0])
    for g in groups:
        first = g["replies"][0]
        problem = asked(g, first["text"])
        if problem:
            row = tally[(case("What is %d %s %d" % problem), g["step"] <= last // 2)]
            row[0] += first["passed"]
            row[1] += 1
    for name in sorted({k for k, _ in tally}):
        (a, n), (b, m) = tally[(name, True)], tally[(name, False)]
        print(f"greedy replies right, {name}: {a} of {n} in the first half, {b} of {m} in the second")


def ones_borrows(groups):
    """On `add` subtractions: how often the rollouts borrow in the ones column ("ones: 3 is less than
    6, borrow 10"), split by whether the ones column needs it, and how often such replies pass, by
    half of the steps. The decision the greedy answer turns on."""
    last = max(g["step"] for g in groups)
    # (needed, first half) -> [replies, borrowed, borrowed and passed, not borrowed and passed]
    tally = collections.defaultdict(lambda: [0, 0, 0, 0])
    # (needed, first half) -> [groups, groups with some passing and some failing replies]
    signal = collections.defaultdict(lambda: [0, 0])
    def ones_needs_borrow(group, text):
        """Whether the group's problem is a subtraction needing a borrow in the ones column; None
        for an addition or no problem found."""
        problem = asked(group, text)
        return problem[0] % 10 < problem[2] % 10 if problem and problem[1] == "-" else None

    for g in groups:
        needed = ones_needs_borrow(g, g["replies"][0]["text"])
        if needed is not None:
            passed = [r["passed"] for r in g["replies"]]
            row = signal[(needed, g["step"] <= last // 2)]
            row[0] += 1
            row[1] += any(passed) and not all(passed)
        for r in g["replies"]:
            needed = ones_needs_borrow(g, r["text"])
            ones = re.search(r"\nones: ([^\n]*)", r["text"])
            if needed is None or not ones:
                continue
            borrowed = "is less than" in ones.group(1)
            row = tally[(needed, g["step"] <= last // 2)]
            row[0] += 1
            row[1] += borrowed
            row[2 if borrowed else 3] += r["passed"]
    for needed in (True, False):
        parts = []
        for half, name in ((True, "first half"), (False, "second half")):
            n, b, bp, sp = tally[(needed, half)]
            parts.append(f"{name} {b} of {n} (passed: {bp} of {b} borrowing, {sp} of {n - b} not)")
        label = "needs a borrow" if needed else "needs none"
        print(f"subtractions whose ones column {label}, replies borrowing there: " + "; ".join(parts))
        (g1, s1), (g2, s2) = signal[(needed, True)], signal[(needed, False)]
        print(f"  their groups with signal (some replies pass, some fail): {s1} of {g1} in the first half,"
              f" {s2} of {g2} in the second")


if __name__ == "__main__":
    main()
