#!/usr/bin/env bash
# The whole test suite: oracle tests (pytest) and re-execution of the committed notebooks (nbval, lax mode).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_venv.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# nbval re-executes the committed notebooks; their figures go to a scratch folder, not figures/
export SHARP_FIGURES_DIR="${SHARP_FIGURES_DIR:-$(mktemp -d)}"
# two workers (one file each at a time: a notebook's cells stay in one kernel), one torch thread each: see
# sharp_utils/runtime.py.  Extra arguments go to pytest, e.g. bash run_tests.sh -n 0 -k hessian
export SHARP_THREADS="${SHARP_THREADS:-1}"
export OMP_NUM_THREADS="$SHARP_THREADS" OPENBLAS_NUM_THREADS="$SHARP_THREADS" MKL_NUM_THREADS="$SHARP_THREADS"
# notebooks first, the longest first (pytest keeps this order; --dist loadfile hands files out in it), then the test
# files fill the end: less idle tail (tests/test_notebooks.py checks that every notebook is listed).  Checked numbers
# are compared within a tolerance (tests/nbtolerance.py); notebook 06 runs under a second CPU capability instead, in
# tests/test_cpu_capability_guard.py, so a digit-fragile check fails here and not on the next machine
NOTEBOOKS=(notebooks/03_sd_eigen_spectra.ipynb notebooks/02_mnist_9_vs_3.ipynb notebooks/05_detection_table1.ipynb
           notebooks/04_trace_alignment.ipynb notebooks/07_regime_ablation.ipynb tests/test_cpu_capability_guard.py
           notebooks/08_snr_sweep.ipynb notebooks/01_toy_2d_mixture.ipynb)
# lint first (seconds): pyflakes and pycodestyle rules, 120 columns, notebooks and course masters included
ruff check . || { echo "ruff: fix the lines above (rules in pyproject.toml [tool.ruff])" >&2; exit 1; }
python -m pytest "${NOTEBOOKS[@]}" tests --nbval-lax --nbval-kernel-name sharp -p no:cacheprovider \
  -n "${SHARP_WORKERS:-2}" --dist loadfile --durations=15 "$@"
