#!/usr/bin/env bash
# Retrieval quality of `nanbeige index`/`nanbeige search` on Python's documentation (Debian
# python3-doc): builds a BM25+vectors index over the HTML docs, asks every question of
# scripts/agent/python-docs-questions.jsonl in each mode and prints recall@5 and MRR@10 (page level:
# a hit counts when its document is one of the question's expected pages), plus build time and size.
# Usage: scripts/agent/eval-retrieval.sh [IDX_DIR]   (default: $CACHE/eval/python-docs-idx)
# Needs: apt-get install python3-doc (done here if missing and we are root), a built nanbeige.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${NANBEIGE_CACHE:-$HOME/.cache/nanbeige}"
DOCS="${PYDOCS:-/usr/share/doc/python3-doc/html}"
IDX="${1:-$CACHE/eval/python-docs-idx}"
BIN="${NANBEIGE_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/release/nanbeige}"
if [ ! -d "$DOCS" ]; then
  if [ "$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-doc >/dev/null
  else echo "error: $DOCS missing: sudo apt-get install python3-doc" >&2; exit 1; fi
fi
[ -x "$BIN" ] || { echo "error: $BIN missing: cargo build --release" >&2; exit 1; }
"$BIN" pull minilm >/dev/null
# Only the prose pages: _sources/ holds reST copies of every page, the genindex/modindex/search
# pages are generated lists of names.
rm -rf "$IDX"
mkdir -p "$(dirname "$IDX")"
START=$(date +%s.%N)
"$BIN" index "$DOCS" --out "$IDX" --embed --json \
  --exclude '_sources/*' --exclude 'genindex*' --exclude py-modindex.html --exclude search.html > "$IDX.build.json"
END=$(date +%s.%N)
python3 scripts/agent/eval_retrieval.py "$BIN" "$IDX" scripts/agent/python-docs-questions.jsonl \
  --build-report "$IDX.build.json" --wall "$(echo "$END - $START" | bc)"
