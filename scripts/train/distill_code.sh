#!/usr/bin/env bash
# Sequence-level distillation of docs/TRAINING.md: Qwen2.5-Coder-0.5B-Instruct answers the prompts
# of the built-in code task's train split, SmolLM2-135M-Instruct is fine-tuned on those answers,
# and held-out pass@1 (hidden tests, sandboxed) is compared before and after.
#   scripts/train/distill_code.sh [WORKDIR]     (env: N_TRAIN, N_EVAL, STEPS, LR)
set -euo pipefail
BIN="${NANBEIGE_BIN:-nanbeige}"
W="${1:-runs/distill-code}"
N_TRAIN="${N_TRAIN:-160}"; N_EVAL="${N_EVAL:-100}"; STEPS="${STEPS:-40}"; LR="${LR:-1e-4}"
mkdir -p "$W"
"$BIN" data gen code --n "$N_TRAIN" --split train --seed 1 --out "$W/prompts.jsonl"
[ -d "$W/student" ] || "$BIN" train export --model smollm2 --out "$W/student"
[ -s "$W/eval-before.json" ] || "$BIN" eval code --gen code --n "$N_EVAL" --seed 3 --model "$W/student" --max-tokens 384 \
    --out "$W/eval-before.jsonl" --json > "$W/eval-before.json"
/usr/bin/time -v "$BIN" train distill --mode seq --teacher qwen2.5-coder --student "$W/student" --data "$W/prompts.jsonl" \
    --out "$W/seq" --max-new-tokens 320 --temperature 0.3 --steps "$STEPS" --lr "$LR" --warmup 3 --batch-tokens 1024 2> "$W/train.log"
"$BIN" eval code --gen code --n "$N_EVAL" --seed 3 --model "$W/seq" --max-tokens 384 --out "$W/eval-after.jsonl" --json > "$W/eval-after.json"
"$BIN" eval compare "$W/eval-before.jsonl" "$W/eval-after.jsonl" | tee "$W/compare.txt"
