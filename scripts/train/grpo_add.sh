#!/usr/bin/env bash
# The GRPO experiment of docs/TRAINING.md: point-wise RL on the SFT model of
# scripts/train/sft_think_format.sh (SmolLM2-135M-Instruct taught the <think> format on `add`),
# with the verifiable reward (exact answer + 0.1 for the format), then held-out accuracy before and
# after with 95% intervals and a paired comparison.
#   scripts/train/grpo_add.sh SFT_MODEL_DIR [WORKDIR]   (env: STEPS, PROMPTS, GROUP, LR, N_EVAL)
set -euo pipefail
BIN="${NANBEIGE_BIN:-nanbeige}"
SFT="$1"; W="${2:-runs/grpo-add}"
STEPS="${STEPS:-25}"; PROMPTS="${PROMPTS:-6}"; GROUP="${GROUP:-8}"; LR="${LR:-3e-6}"; N_EVAL="${N_EVAL:-200}"
mkdir -p "$W"
[ -s "$W/eval-before.json" ] || "$BIN" eval math --gen add --n "$N_EVAL" --seed 2 --model "$SFT" --max-tokens 256 \
    --out "$W/eval-before.jsonl" --json > "$W/eval-before.json"
/usr/bin/time -v "$BIN" train grpo --model "$SFT" --gen add --n 2000 --out "$W/grpo" --steps "$STEPS" \
    --prompts "$PROMPTS" --group "$GROUP" --lr "$LR" --max-tokens 256 --batch-tokens 256 --rollout-batch 48 --save-every 10 --seed 2 2> "$W/train.log"
"$BIN" eval math --gen add --n "$N_EVAL" --seed 2 --model "$W/grpo" --max-tokens 256 --out "$W/eval-after.jsonl" --json > "$W/eval-after.json"
"$BIN" eval compare "$W/eval-before.jsonl" "$W/eval-after.jsonl" | tee "$W/compare.txt"
