#!/usr/bin/env python3
"""Score `nanbeige search` against questions with known source pages.

For each question and each mode (bm25, hybrid, dense) runs `nanbeige search IDX Q --k 10 --json
--mode M` and takes the ranked chunk hits. Page level: a hit is relevant when its doc id is one of
the question's expected pages. recall@5 = share of questions with a relevant hit in the top 5;
MRR@10 = mean of 1/rank of the first relevant hit in the top 10 (0 when none). Also prints the
questions each mode misses at 5. Standard library only.
"""
import argparse
import json
import subprocess
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("bin")
ap.add_argument("index")
ap.add_argument("questions")
ap.add_argument("--modes", default="bm25,hybrid,dense")
ap.add_argument("--build-report")
ap.add_argument("--wall", type=float)
ap.add_argument("--misses", action="store_true", help="list the questions missed at 5")
a = ap.parse_args()

qs = [json.loads(l) for l in open(a.questions) if l.strip()]
rows = []
for mode in a.modes.split(","):
    hits5 = 0
    rr = 0.0
    misses = []
    t0 = time.time()
    for q in qs:
        out = subprocess.run([a.bin, "search", a.index, q["question"], "--k", "10", "--json", "--mode", mode],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"search failed ({mode}): {out.stderr.strip()}")
        docs = [h["doc_id"] for h in json.loads(out.stdout)]
        ranks = [i + 1 for i, d in enumerate(docs) if d in q["pages"]]
        if ranks and ranks[0] <= 5:
            hits5 += 1
        else:
            misses.append((q["id"], q["question"], docs[:3]))
        rr += 1.0 / ranks[0] if ranks else 0.0
    secs = time.time() - t0
    rows.append((mode, hits5 / len(qs), rr / len(qs), secs / len(qs)))
    if a.misses:
        for m in misses:
            print(f"  [{mode}] miss {m[0]}: {m[1]}  -> {m[2]}", file=sys.stderr)

print(f"questions: {len(qs)}")
print("| mode | recall@5 | MRR@10 | s/query (incl. process start) |")
print("|---|---|---|---|")
for mode, r5, mrr, spq in rows:
    print(f"| {mode} | {r5:.3f} | {mrr:.3f} | {spq:.2f} |")
if a.build_report:
    r = json.load(open(a.build_report))
    print(f"index: {r['total_docs']} documents, {r['total_chunks']} chunks, {r['bytes'] / 2**20:.1f} MiB on disk, "
          f"build {r['seconds']:.0f} s" + (f" (wall {a.wall:.0f} s)" if a.wall else ""))
