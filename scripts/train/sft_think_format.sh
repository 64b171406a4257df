#!/usr/bin/env bash
# The SmolLM2-135M-Instruct SFT experiment of docs/TRAINING.md: teach the Nanbeige answer format
# (`<think>…</think>` then the answer) on generated arithmetic with worked reasoning, and measure
# format compliance and held-out accuracy (95% intervals) before and after with `nanbeige eval`.
#   scripts/train/sft_think_format.sh [WORKDIR]     (env: TASK, N_TRAIN, N_EVAL, STEPS, LR, BATCH)
# On 2 CPU cores this takes ~30 minutes with the defaults. The base model and its evaluation, when
# already in WORKDIR (e.g. copied from a run on another TASK with the same problems: add and
# add-compare), are kept.
set -euo pipefail
BIN="${NANBEIGE_BIN:-nanbeige}"
W="${1:-runs/sft-think}"
TASK="${TASK:-add}"; N_TRAIN="${N_TRAIN:-600}"; N_EVAL="${N_EVAL:-200}"; STEPS="${STEPS:-80}"; LR="${LR:-1e-4}"; BATCH="${BATCH:-1024}"
mkdir -p "$W"
"$BIN" data gen "$TASK" --n "$N_TRAIN" --split train --seed 1 --reasoning --out "$W/train.jsonl"
[ -f "$W/base/config.json" ] || "$BIN" train export --model smollm2 --out "$W/base"
[ -s "$W/eval-before.json" ] || "$BIN" eval math --gen "$TASK" --n "$N_EVAL" --seed 2 --model "$W/base" --max-tokens 256 \
    --out "$W/eval-before.jsonl" --json > "$W/eval-before.json"
/usr/bin/time -v "$BIN" train sft --model "$W/base" --data "$W/train.jsonl" --out "$W/sft" \
    --steps "$STEPS" --lr "$LR" --warmup 5 --schedule cosine --batch-tokens "$BATCH" --accum 1 --seed 1 2> "$W/train.log"
"$BIN" eval math --gen "$TASK" --n "$N_EVAL" --seed 2 --model "$W/sft" --max-tokens 256 --out "$W/eval-after.jsonl" --json > "$W/eval-after.json"
"$BIN" eval compare "$W/eval-before.jsonl" "$W/eval-after.jsonl" | tee "$W/compare.txt"
