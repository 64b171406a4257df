#!/usr/bin/env bash
# The pair-wise RL experiment of docs/TRAINING.md: a Bradley-Terry reward model trained on the SFT
# model's own (right, wrong) pairs from scripts/train/dpo_add.sh, then RL on win rates inside each
# group under that reward model, then held-out accuracy, greedy and sampled (temperature 1, 4
# samples), and the win rate of after over before with the answer checker as judge (the checker
# is never seen in training here); then the reward model's accuracy on pairs from each model's own
# held-out samples (where RL moved the policy, is it still right?).
#   scripts/train/pairwise_add.sh SFT_MODEL_DIR PAIRS_JSONL [WORKDIR]
#   env: STEPS, PROMPTS, GROUP, LR, TEMP, SEED, N_EVAL, RM_LR, MODES ("sampled greedy": which evaluations),
#   KL (weight of the KL penalty to the SFT model), NO_STD=1 (centered win rates, not divided by the
#   group's std), SAVE_EVERY, RM_REFRESH_LR (keep training the reward model on the checker's labels of
#   each step's rollouts, after they are scored; 0: frozen), RM_REFRESH_PAIRS (pairs per group),
#   POOL=mean|vote (replies with the same final answer share their win rates: --pool-answers; 1 = mean),
#   QUORUM (with POOL=vote: the share of the vote the leading answer needs, else the group abstains),
#   JUDGE=MODEL (an LLM judge instead of the reward model: `nanbeige serve -m MODEL` on JUDGE_PORT,
#   default 8091, started here and stopped at exit; it solves each prompt itself, --judge-solves;
#   PAIRS is then unused, and no reward model is trained or evaluated),
#   DATA=FILE (train prompts from this `data gen add`-style JSONL instead of the generator's 2000,
#   e.g. from balance_add.py; held-out evaluation is unchanged), GREEDY_FIRST=1 (the first reply of
#   each group is the greedy one: --greedy-first), PROCESS_CREDIT=1 (a failing reply is blamed from its
#   first step off the worked solution: --process-credit), STEP_CREDIT=1 (a below-average reply is
#   trained only on its first line off the worked solution: --step-credit), GREEDY_NEGATIVES=1 (a
#   negative advantage trains only tokens that were the argmax: --greedy-negatives).
#   The checker watches every rollout (logged pass rate, never the reward).
# Steps already done in WORKDIR (the reward model, evaluations) are kept.
set -euo pipefail
BIN="${NANBEIGE_BIN:-nanbeige}"
SFT="$1"; PAIRS="$2"; W="${3:-runs/pairwise-add}"
STEPS="${STEPS:-20}"; PROMPTS="${PROMPTS:-6}"; GROUP="${GROUP:-8}"; LR="${LR:-1e-5}"; TEMP="${TEMP:-1}"
SEED="${SEED:-3}"; N_EVAL="${N_EVAL:-200}"; RM_LR="${RM_LR:-1e-5}"; KL="${KL:-0}"; SAVE_EVERY="${SAVE_EVERY:-10}"
EXTRA=(); [ -z "${NO_STD:-}" ] || EXTRA+=(--no-std)
[ -z "${POOL:-}" ] || EXTRA+=(--pool-answers "$([ "$POOL" = 1 ] && echo mean || echo "$POOL")")
[ -z "${QUORUM:-}" ] || EXTRA+=(--vote-quorum "$QUORUM")
[ -z "${GREEDY_FIRST:-}" ] || EXTRA+=(--greedy-first)
[ -z "${PROCESS_CREDIT:-}" ] || EXTRA+=(--process-credit)
[ -z "${STEP_CREDIT:-}" ] || EXTRA+=(--step-credit)
[ -z "${GREEDY_NEGATIVES:-}" ] || EXTRA+=(--greedy-negatives)
PROMPT_SRC=(--gen add --n 2000); [ -z "${DATA:-}" ] || PROMPT_SRC=(--data "$DATA" --task math)
EXTRA+=(--rm-refresh-lr "${RM_REFRESH_LR:-0}" --rm-refresh-pairs "${RM_REFRESH_PAIRS:-2}")
mkdir -p "$W"
if [ -n "${JUDGE:-}" ]; then
    PORT="${JUDGE_PORT:-8091}"
    "$BIN" serve -m "$JUDGE" --port "$PORT" > "$W/judge.log" 2>&1 &
    JUDGE_PID=$!
    trap 'kill $JUDGE_PID 2>/dev/null || true' EXIT
    for _ in $(seq 120); do curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null && break; sleep 1; done
    curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null || { echo "the judge did not start: $W/judge.log" >&2; exit 1; }
    REWARD=(--judge "http://127.0.0.1:$PORT" --judge-solves)
else
    # Every 5th pair is held out; the log reports the reward model's accuracy on them.
    [ -f "$W/rm/config.json" ] || /usr/bin/time -v "$BIN" train rm --model "$SFT" --data "$PAIRS" --out "$W/rm" \
        --lr "$RM_LR" 2> "$W/rm.log"
    REWARD=(--rm "$W/rm")
fi
/usr/bin/time -v "$BIN" train pairwise --model "$SFT" "${REWARD[@]}" "${PROMPT_SRC[@]}" --out "$W/pw" --steps "$STEPS" \
    --prompts "$PROMPTS" --group "$GROUP" --lr "$LR" --temperature "$TEMP" --max-tokens 256 --batch-tokens 512 \
    --rollout-batch 48 --save-every "$SAVE_EVERY" --seed "$SEED" --kl "$KL" --watch-checker "${EXTRA[@]}" 2> "$W/train.log"
# Sampled first: temperature-1 accuracy is where RL's held-out gain showed for GRPO (TRAINING.md).
for mode in ${MODES:-sampled greedy}; do
    for m in sft pw; do
        M="$SFT"; [ "$m" = pw ] && M="$W/pw"
        S=(); [ "$mode" = sampled ] && S=(--samples 4 --temperature 1 --top-p 1)
        [ -s "$W/$mode-$m.json" ] || "$BIN" eval math --gen add --n "$N_EVAL" --seed 2 --model "$M" --max-tokens 256 \
            --parallel 16 "${S[@]}" --out "$W/$mode-$m.jsonl" --json > "$W/$mode-$m.json"
    done
    "$BIN" eval compare "$W/$mode-sft.jsonl" "$W/$mode-pw.jsonl" | tee "$W/compare-$mode.txt"
    [ "$mode" = sampled ] && [ -z "${JUDGE:-}" ] || continue
    # Does the reward model still rank right over wrong on each policy's own held-out samples?
    for m in sft pw; do
        python3 "$(dirname "$0")/pairs_from_eval.py" "$W/$mode-$m.jsonl" > "$W/heldout-pairs-$m.jsonl"
        "$BIN" train rm --eval --model "$W/rm" --data "$W/heldout-pairs-$m.jsonl" | tee -a "$W/compare-$mode.txt" || true
        # The refreshed reward model, when this run refreshed one: did it keep up with the policy?
        [ "${RM_REFRESH_LR:-0}" = 0 ] || "$BIN" train rm --eval --model "$W/pw/reward_model" \
            --data "$W/heldout-pairs-$m.jsonl" | tee -a "$W/compare-$mode.txt" || true
    done
done
