#!/usr/bin/env bash
# The GRPO experiment of docs/TRAINING.md: point-wise RL on the SFT model of
# scripts/train/sft_think_format.sh (SmolLM2-135M-Instruct taught the <think> format on `add`),
# with the verifiable reward (exact answer + 0.1 for the format). Then held-out accuracy before and
# after with 95% intervals and paired comparisons, greedy and sampled (temperature 1, 4 samples).
#   scripts/train/grpo_add.sh SFT_MODEL_DIR [WORKDIR]
#   env: STEPS, PROMPTS, GROUP, LR, SEED, BATCH_TOKENS, N_EVAL, LORA (rank; default full fine-tuning),
#        TEMP (rollout temperature, default 1), DIGIT (weight of digit credit for wrong answers, default 0),
#        DATA (train prompts from this `data gen add`-style JSONL, e.g. from balance_add.py, instead of
#        the generator's 2000; held-out evaluation is unchanged), GREEDY_FIRST=1 (the first reply of
#        each group is the greedy one: --greedy-first), PROCESS_CREDIT=1 (a failing reply is blamed from
#        its first step off the worked solution: --process-credit), STEP_CREDIT=1 (a reply passes only as
#        the worked solution, and a failing one is trained only on its first wrong line: --step-credit),
#        GREEDY_NEGATIVES=1 (a negative advantage trains only tokens that were the argmax: --greedy-negatives),
#        MODES ("greedy sampled": which held-out evaluations; N_EVAL=600 holds the default 200 first)
# Evaluations already in WORKDIR (e.g. the SFT model's, copied from an earlier run) are kept.
# Defaults are run 3 of the doc; run 2 was STEPS=25 LR=3e-6 SEED=2 BATCH_TOKENS=256.
set -euo pipefail
BIN="${NANBEIGE_BIN:-nanbeige}"
SFT="$1"; W="${2:-runs/grpo-add}"
STEPS="${STEPS:-30}"; PROMPTS="${PROMPTS:-6}"; GROUP="${GROUP:-8}"; LR="${LR:-1e-5}"; SEED="${SEED:-3}"
BATCH_TOKENS="${BATCH_TOKENS:-512}"; N_EVAL="${N_EVAL:-200}"; TEMP="${TEMP:-1}"; DIGIT="${DIGIT:-0}"
FLAGS=(); [ -z "${LORA:-}" ] || FLAGS=(--lora "$LORA")
PROMPT_SRC=(--gen add --n 2000); [ -z "${DATA:-}" ] || PROMPT_SRC=(--data "$DATA" --task math)
[ -z "${GREEDY_FIRST:-}" ] || FLAGS+=(--greedy-first)
[ -z "${PROCESS_CREDIT:-}" ] || FLAGS+=(--process-credit)
[ -z "${STEP_CREDIT:-}" ] || FLAGS+=(--step-credit)
[ -z "${GREEDY_NEGATIVES:-}" ] || FLAGS+=(--greedy-negatives)
mkdir -p "$W"
/usr/bin/time -v "$BIN" train grpo --model "$SFT" "${PROMPT_SRC[@]}" --out "$W/grpo" --steps "$STEPS" \
    --prompts "$PROMPTS" --group "$GROUP" --lr "$LR" --temperature "$TEMP" --digit-reward "$DIGIT" --max-tokens 256 --batch-tokens "$BATCH_TOKENS" \
    --rollout-batch 48 --save-every 10 --seed "$SEED" "${FLAGS[@]}" 2> "$W/train.log"
for mode in ${MODES:-greedy sampled}; do
    for m in sft grpo; do
        M="$SFT"; [ "$m" = grpo ] && M="$W/grpo"
        S=(); [ "$mode" = sampled ] && S=(--samples 4 --temperature 1 --top-p 1)
        [ -s "$W/$mode-$m.json" ] || "$BIN" eval math --gen add --n "$N_EVAL" --seed 2 --model "$M" --max-tokens 256 \
            --parallel 16 "${S[@]}" --out "$W/$mode-$m.jsonl" --json > "$W/$mode-$m.json"
    done
    "$BIN" eval compare "$W/$mode-sft.jsonl" "$W/$mode-grpo.jsonl" | tee "$W/compare-$mode.txt"
done
