#!/usr/bin/env bash
# The whole test suite: oracle tests (pytest) and re-execution of the committed notebooks (nbval, lax mode).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_venv.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# nbval re-executes the committed notebooks; their figures go to a scratch folder, not figures/
export SHARP_FIGURES_DIR="${SHARP_FIGURES_DIR:-$(mktemp -d)}"
python -m pytest tests notebooks --nbval-lax --nbval-kernel-name sharp -p no:cacheprovider "$@"
