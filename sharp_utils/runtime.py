"""CPU thread count for notebooks and tests, in one place.

``$SHARP_THREADS`` (default 2, the CI machine's cores) sets torch's intra-op threads.  ``run_all.sh`` and the
test command set it to 1, so committed outputs and nbval agree.  The test command runs two pytest workers:
MiniSD's and the toy models' tensors are so small that two processes with two OpenMP threads each on two cores
spend most of their time waiting at barriers (a plain MiniSD generation took 315 s instead of 4 s next to a
training run).
"""
from __future__ import annotations

import os

import torch


def threads() -> int:
    v = os.environ.get("SHARP_THREADS", "2")
    try:
        n = int(v)
    except ValueError:
        raise ValueError(f"SHARP_THREADS={v!r} is not an integer: set it to the number of CPU threads to use") from None
    if n < 1:
        raise ValueError(f"SHARP_THREADS={n} must be >= 1")
    return n


def set_threads() -> int:
    """torch.set_num_threads(``$SHARP_THREADS``, default 2); returns the count."""
    n = threads()
    torch.set_num_threads(n)
    return n
