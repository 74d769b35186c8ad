"""Run a command and write its wall time (s) and peak memory (KiB: the largest resident set among the command and
the processes it waited for, e.g. papermill's kernel) to a file: ``python scripts/measure.py OUT -- CMD ...``.
run_all.sh times each notebook with it (bench/results/notebooks.csv)."""
from __future__ import annotations

import resource
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python scripts/measure.py OUT -- COMMAND [ARG ...]", file=sys.stderr)
        return 2
    start = time.perf_counter()
    rc = subprocess.call(argv[2:])
    seconds = time.perf_counter() - start
    kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB
    with open(argv[0], "w", encoding="utf-8") as f:
        f.write(f"{seconds:.0f} {kib}\n")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
