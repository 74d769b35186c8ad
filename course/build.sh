#!/usr/bin/env bash
# Build every assignment from its master notebook (course/a*_*.ipynb) with otter assign:
#   bash course/build.sh [OUT]     # default OUT: course/dist
# writes OUT/<name>/student/<name>.ipynb (hand this out) and OUT/<name>/autograder/<name>-autograder_*.zip (grade
# with it: bash course/grade.sh). Generated files are not committed (.gitignore).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_venv.sh
out="${1:-course/dist}"
for master in course/a[0-9]_*.ipynb; do
  name="$(basename "$master" .ipynb)"
  rm -rf "${out:?}/$name"
  otter assign "$master" "$out/$name" > "$out.$name.log" 2>&1 || { cat "$out.$name.log"; exit 1; }
  rm -f "$out.$name.log"
  echo "$out/$name: student/$name.ipynb, autograder/$(basename "$out/$name"/autograder/*.zip)"
done
