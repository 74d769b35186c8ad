#!/usr/bin/env bash
# Grade submissions locally (no Docker, no server) with an assignment's autograder:
#   bash course/grade.sh NAME SUBMISSION.ipynb [...]      # e.g. a1_sharpness alice.ipynb bob.ipynb
# writes course/grades/NAME/<submission>/results.json and prints each score; course/build.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_venv.sh
name="$1"; shift
zip=$(ls course/dist/"$name"/autograder/*-autograder_*.zip 2>/dev/null | tail -1) \
  || { echo "no autograder for $name: run bash course/build.sh first" >&2; exit 1; }
for sub in "$@"; do
  dest="course/grades/$name/$(basename "$sub" .ipynb)"
  mkdir -p "$dest"
  otter run -a "$zip" -o "$dest" --no-logo "$sub" | tail -n +2
done
