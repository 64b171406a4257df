#!/usr/bin/env bash
# The pair-wise experiment of docs/TRAINING.md: offline DPO on the model's own preference pairs.
# The SFT model of scripts/train/sft_think_format.sh samples K replies to each of N train problems
# (`add`, temperature 1); a passing and a failing reply to the same problem make a pair
# (scripts/train/pairs_from_eval.py); DPO trains the SFT model on them. Then the held-out set, before and after, greedy: pass@1, the
# paired comparison, and the win rate of after over before under the answer checker as judge.
#   scripts/train/dpo_add.sh SFT_MODEL_DIR [WORKDIR]   (env: N, K, LR, BETA, NLL (RPO weight), N_EVAL;
#   RM=1 also fits a reward model to the pairs; JUDGE=URL adds an LLM judge's win rate)
set -euo pipefail
BIN="${NANBEIGE_BIN:-nanbeige}"
HERE="$(cd "$(dirname "$0")" && pwd)"
SFT="$1"; W="${2:-runs/dpo-add}"
N="${N:-300}"; K="${K:-4}"; LR="${LR:-2e-6}"; BETA="${BETA:-0.1}"; NLL="${NLL:-0}"; N_EVAL="${N_EVAL:-200}"
mkdir -p "$W"
[ -s "$W/pairs.jsonl" ] || {
"$BIN" data gen add --n "$N" --split train --seed 7 --out "$W/prompts.jsonl"
"$BIN" eval math --data "$W/prompts.jsonl" --model "$SFT" --samples "$K" --temperature 1 --top-p 1 --parallel 32 \
    --max-tokens 256 --out "$W/samples.jsonl" --json > "$W/samples.json"
python3 "$HERE/pairs_from_eval.py" "$W/samples.jsonl" --per-item 2 > "$W/pairs.jsonl"
}
[ -z "${RM:-}" ] || "$BIN" train rm --model "$SFT" --data "$W/pairs.jsonl" --out "$W/rm" --lr 1e-5 | tee "$W/rm.txt"
/usr/bin/time -v "$BIN" train dpo --model "$SFT" --data "$W/pairs.jsonl" --out "$W/dpo" --lr "$LR" --beta "$BETA" --nll "$NLL" \
    --holdout 0 2> "$W/dpo.log" | tee "$W/dpo.txt"
[ -s "$W/eval-before.json" ] || "$BIN" eval math --gen add --n "$N_EVAL" --seed 2 --model "$SFT" --max-tokens 256 \
    --out "$W/eval-before.jsonl" --json > "$W/eval-before.json"
"$BIN" eval math --gen add --n "$N_EVAL" --seed 2 --model "$W/dpo" --max-tokens 256 --out "$W/eval-after.jsonl" --json > "$W/eval-after.json"
"$BIN" eval compare "$W/eval-before.jsonl" "$W/eval-after.jsonl" | tee "$W/compare.txt"
# An LLM judge never seen in training (e.g. Qwen2.5-Coder-0.5B-Instruct behind `nanbeige serve`).
if [ -n "${JUDGE:-}" ]; then
    "$BIN" eval winrate "$W/eval-before.jsonl" "$W/eval-after.jsonl" --endpoint "$JUDGE" | tee "$W/winrate.txt"
fi
