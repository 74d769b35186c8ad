#!/usr/bin/env bash
# Create or reuse .venv, install requirements.txt and sharp_utils (editable), register the `sharp` kernel.
# Sourced by run_all.sh and run_tests.sh.  Re-installs only when requirements.txt or pyproject.toml change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 is needed (3.11 tested)"'
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.sharp-installed"
want="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements.txt" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$ROOT" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c 'import torch, diffusers, papermill, nbval, sharp_utils' \
    || { echo "setup_venv: the install is incomplete (see pip's messages above)" >&2; exit 1; }
  "$VENV/bin/python" -m ipykernel install --sys-prefix --name sharp --display-name "Python (sharp)" >/dev/null
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
export MPLBACKEND=Agg TQDM_DISABLE=1 PYDEVD_DISABLE_FILE_VALIDATION=1
