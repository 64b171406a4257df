#!/usr/bin/env bash
# End-to-end evidence for the agent: `nanbeige research` with Qwen2.5-Coder-0.5B-Instruct running
# in-process, over a BM25 index of Python's documentation (Debian python3-doc), making real tool
# calls. Prints progress on stderr and the JSON report on stdout; the trajectory goes to
# $CACHE/agent/e2e.jsonl. Usage: scripts/agent/research-e2e.sh ["question"] [IDX_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${NANBEIGE_CACHE:-$HOME/.cache/nanbeige}"
DOCS="${PYDOCS:-/usr/share/doc/python3-doc/html}"
Q="${1:-What does the functools.lru_cache decorator do, and what happens when maxsize is None?}"
IDX="${2:-$CACHE/agent/python-docs-bm25}"
BIN="${NANBEIGE_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/release/nanbeige}"
if [ ! -d "$DOCS" ]; then
  if [ "$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-doc >/dev/null
  else echo "error: $DOCS missing: sudo apt-get install python3-doc" >&2; exit 1; fi
fi
[ -x "$BIN" ] || { echo "error: $BIN missing: cargo build --release" >&2; exit 1; }
"$BIN" pull qwen2.5-coder >/dev/null
if [ ! -d "$IDX" ]; then
  mkdir -p "$(dirname "$IDX")"
  "$BIN" index "$DOCS" --out "$IDX" --json \
    --exclude '_sources/*' --exclude 'genindex*' --exclude py-modindex.html --exclude search.html > "$IDX.build.json"
fi
mkdir -p "$CACHE/agent"
"$BIN" research "$Q" --index "$IDX" --model qwen2.5-coder --no-python \
  --max-turns "${MAX_TURNS:-8}" --max-tokens 256 --temperature 0 --ctx 8192 --visit-tokens 600 --search-k 4 \
  --log "$CACHE/agent/e2e.jsonl" --json
