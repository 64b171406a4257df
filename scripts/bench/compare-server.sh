#!/usr/bin/env bash
# Side-by-side server benchmark: `nanbeige serve` and llama.cpp's `llama-server` on the same GGUF
# file, same machine, same threads, driven by the same client (scripts/bench/server_load.py) on
# loopback. For each model: aggregate decode tokens/s of 8 concurrent streams vs one stream (three
# rounds, the median reported and every round's ratio shown), and
# the time to first token of a follow-up turn vs the cold prefill of a 2,000-token conversation.
#
# llama-server is built (once) from the llama.cpp source inside the PyPI sdist `llama-cpp-python`
# into ~/.cache/nanbeige/llama.cpp/build-server-ISA, never inside this repository, for the CPU's
# instruction sets (scripts/bench/llamacpp_isa.sh).
#
# Usage: scripts/bench/compare-server.sh [-t THREADS] [--streams N] [--tokens N] [FILE.gguf ...]
# With no files: the two real test models (SmolLM2-135M Q4_1 and Qwen2.5-Coder-0.5B).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${NANBEIGE_CACHE:-$HOME/.cache/nanbeige}"
LCPP="$CACHE/llama.cpp"
LCPP_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
source "$ROOT/scripts/bench/llamacpp_isa.sh"
BUILD="$LCPP/build-server-$ISA"
THREADS=2
STREAMS=8
TOKENS=64
FILES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -t|--threads) THREADS="$2"; shift ;;
    --streams) STREAMS="$2"; shift ;;
    --tokens) TOKENS="$2"; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1" >&2; exit 1 ;;
    *) FILES+=("$1") ;;
  esac
  shift
done

# The sources and cmake come from compare-llamacpp.sh's build (same pinned sdist).
"$ROOT/scripts/bench/compare-llamacpp.sh" --build-only >&2
SRC="$LCPP/llama_cpp_python-$LCPP_VERSION/vendor/llama.cpp"
if [[ ! -x "$BUILD/bin/llama-server" ]]; then
  "$LCPP/venv/bin/cmake" -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    "${ISA_FLAGS[@]}" \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
    -DBUILD_SHARED_LIBS=OFF >"$LCPP/cmake-configure-server.log" 2>&1
  "$LCPP/venv/bin/cmake" --build "$BUILD" --target llama-server -j "$(nproc)" >"$LCPP/cmake-build-server.log" 2>&1 || {
    tail -n 30 "$LCPP/cmake-build-server.log" >&2
    echo "error: building llama-server failed (log: $LCPP/cmake-build-server.log)" >&2
    exit 1
  }
fi
LLAMA_SERVER="$BUILD/bin/llama-server"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
(cd "$ROOT" && cargo build --release -q -p nanbeige)
mkdir -p "$CACHE/bin"
NANBEIGE="$CACHE/bin/nanbeige-compare-server"
cp "$CARGO_TARGET_DIR/release/nanbeige" "$NANBEIGE"

if [[ ${#FILES[@]} -eq 0 ]]; then
  "$NANBEIGE" pull all >&2
  FILES=("$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf" "$CACHE/models/Qwen2.5-Coder-0.5B-Instruct.gguf")
fi

PORT="${PORT:-18431}"
URL="http://127.0.0.1:$PORT"
LOAD="$ROOT/scripts/bench/server_load.py"
SERVER_PID=""
stop_server() {
  if [[ -n "$SERVER_PID" ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap stop_server EXIT

wait_healthy() {
  for _ in $(seq 1 240); do
    if curl -sf "$URL/health" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "error: the server exited" >&2; return 1; fi
    sleep 0.5
  done
  echo "error: the server did not become healthy in 120 s" >&2
  return 1
}

echo "| model | server | 1 stream tok/s | $STREAMS streams tok/s | ratio (median round) | ratios of the rounds | cold TTFT s | follow-up TTFT s | follow-up / cold |"
echo "|---|---|---:|---:|---:|---|---:|---:|---:|"
for f in "${FILES[@]}"; do
  [[ -f "$f" ]] || { echo "error: $f: no such file" >&2; exit 1; }
  name=$(basename "$f")
  for server in nanbeige llama.cpp; do
    echo "$name: $server" >&2
    if [[ $server == nanbeige ]]; then
      RAYON_NUM_THREADS="$THREADS" "$NANBEIGE" serve --model "$f" --port "$PORT" --ctx 16384 >"$CACHE/compare-server-nanbeige.log" 2>&1 &
    else
      "$LLAMA_SERVER" -m "$f" -t "$THREADS" -np "$STREAMS" -c $((STREAMS * 2048 + 4096)) --port "$PORT" \
        >"$CACHE/compare-server-llama.log" 2>&1 &
    fi
    SERVER_PID=$!
    wait_healthy
    c=$(python3 "$LOAD" concurrency "$URL" --streams "$STREAMS" --tokens "$TOKENS")
    fu=$(python3 "$LOAD" followup "$URL")
    stop_server
    python3 - "$name" "$server" "$c" "$fu" <<'PY'
import json, sys
name, server, c, f = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
rounds = ", ".join("%.2f" % r["ratio"] for r in c["rounds"])
print(f"| {name} | {server} | {c['single_stream_tokens_per_s']:.1f} | {c['aggregate_tokens_per_s']:.1f} | "
      f"{c['ratio']:.2f}x | {rounds} | {f['cold_ttft_s']:.3f} | {f['followup_ttft_s']:.3f} | {f['ratio']:.3f} |", flush=True)
PY
  done
done
