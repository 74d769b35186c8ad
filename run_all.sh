#!/usr/bin/env bash
# Regenerate every figure: run each notebook in order with papermill (kernel `sharp`), in place, so the
# committed outputs are this profile's; figures land in figures/ as PNG + PDF.
#   bash run_all.sh                  # default profile (CPU minutes, shipped checkpoints)
#   PROFILE=paper bash run_all.sh    # full scale, retrains, GPU recommended
#   bash run_all.sh notebooks/04_trace_alignment.ipynb   # only some notebooks
#   bash run_all.sh --recompute [NOTEBOOK ...]            # drop their committed results/<notebook>/ first
# The default profile reads the heavy results committed under results/<notebook>/ and computes only missing rows.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_venv.sh
PROFILE="${PROFILE:-default}"
# one torch/BLAS thread, as in run_tests.sh: some checked digits (notebook 02's spectra) depend on the thread count
export SHARP_THREADS="${SHARP_THREADS:-1}"
export OMP_NUM_THREADS="$SHARP_THREADS" OPENBLAS_NUM_THREADS="$SHARP_THREADS" MKL_NUM_THREADS="$SHARP_THREADS"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
recompute=0
if [ "${1:-}" = "--recompute" ]; then recompute=1; shift; fi
if [ "$#" -gt 0 ]; then nbs=("$@"); else nbs=(notebooks/[0-9][0-9]_*.ipynb); fi
# each notebook's wall time and peak memory are appended to bench/results/notebooks.csv (with date and machine)
timing=$(mktemp)
device="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc --all) cores"
[ -f bench/results/notebooks.csv ] || echo "date,device,profile,threads,notebook,seconds,peak_mib" > bench/results/notebooks.csv
for nb in "${nbs[@]}"; do
  if [ "$recompute" = 1 ]; then rm -rf "results/$(basename "$nb" .ipynb)"; fi
  echo "== $nb (profile=$PROFILE)"
  # wall time and peak memory of papermill and its kernel (scripts/measure.py)
  python scripts/measure.py "$timing" -- papermill "$nb" "$nb" -k sharp -p profile "$PROFILE" --cwd notebooks \
    --no-progress-bar
  python scripts/clean_notebook.py "$nb"
  read -r secs kib < "$timing"
  echo "   done in ${secs} s, peak memory $(( kib / 1024 )) MiB"
  echo "$(date +%F),\"$device\",$PROFILE,$SHARP_THREADS,$(basename "$nb" .ipynb),${secs},$(( kib / 1024 ))" \
    >> bench/results/notebooks.csv
done
# the claims tables of README.md and docs/results.md, from what the executed notebooks print
python scripts/claims_table.py
ls figures/
