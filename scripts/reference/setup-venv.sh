#!/usr/bin/env bash
# Creates (or updates) the Python venv used to regenerate the reference fixtures:
#   ${NANBEIGE_CACHE:-$HOME/.cache/nanbeige}/refvenv
# Idempotent: re-running only installs what is missing. Fixtures are committed; CI never runs this.
# Torch from PyPI pulls CUDA libraries (~5 GB) although the scripts run on CPU; to get the smaller CPU
# build set e.g. PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu (if that index is reachable).
# Usage: scripts/reference/setup-venv.sh && VENV/bin/python scripts/reference/make_tiny_models.py
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${NANBEIGE_CACHE:-$HOME/.cache/nanbeige}/refvenv"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating venv at $VENV" >&2
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
fi
# pip skips packages already installed at the pinned version, so this is cheap when nothing changed
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
"$VENV/bin/python" -c "import torch, transformers, gguf, safetensors, tokenizers, accelerate; print('refvenv ok: torch', torch.__version__, 'transformers', transformers.__version__, 'gguf', __import__('importlib.metadata').metadata.version('gguf'))"
echo "$VENV"
