"""The tolerance nbval applies to checked notebook outputs (tests/nbtolerance.py), unit by unit and through nbval."""
import json
import os
import re
import subprocess
import sys

import pytest

from sharp_utils import paths
from tests.nbtolerance import Tolerance, last_digit_unit, numbers_agree, reconcile_text


@pytest.mark.parametrize("token, unit", [("0.606", 1e-3), ("-0.320506", 1e-6), ("9e-02", 1e-2), ("4288", 1.0),
                                         ("-2.336e+04", 10.0), ("92.5", 0.1), ("12.", 1.0)])
def test_last_digit_unit(token, unit):
    assert last_digit_unit(token) == pytest.approx(unit)


def test_the_kernel_differences_seen_on_avx512_pass_and_real_changes_fail():
    # digits that moved between CPU kernels (the AVX-512 run): within one unit of the last digit
    assert numbers_agree("0.606", "0.607") and numbers_agree("-0.320506", "-0.320507")
    assert numbers_agree("1e-01", "9e-02") and numbers_agree("9e-04", "1e-03")
    # changes a kernel does not explain
    assert not numbers_agree("0.606", "0.608") and not numbers_agree("4e-02", "6e-02")
    assert not numbers_agree("-4288", "-4290") and numbers_agree("-4288", "-4290", Tolerance(units=2))
    assert numbers_agree("100", "101.5", Tolerance(units=0, rel=0.02)) and not numbers_agree("100", "103",
                                                                                          Tolerance(rel=0.02))


def test_reconcile_text_keeps_text_exact():
    ref = "AUC 0.606 vs 0.735 (n = 4)\nclaim held [fig2-first] (t = T−1): True | drop ~-0.446\n"
    ok = "AUC 0.607 vs 0.735 (n = 4)\nclaim held [fig2-first] (t = T−1): True | drop ~-0.440\n"
    assert reconcile_text(ref, ok) == ref  # agreeing digits and an approximate number
    for bad in (ok.replace("True", "False"),  # a verdict flips
                ok.replace("0.607", "0.609"),  # a number beyond its tolerance
                ok.replace("(n = 4)", "(n = 4, 5)"),  # a number more
                ok.replace("~-0.440", "-0.440")):  # an approximate number printed as exact
        assert reconcile_text(ref, bad) != ref
    # ids with digits glued to letters are text, not numbers
    assert reconcile_text("fig2 x_T2 wen@1", "fig3 x_T2 wen@1") != "fig2 x_T2 wen@1"


def test_tolerance_line_parses_and_rejects_typos():
    assert Tolerance.from_source("x = 1\n# NBVAL_TOLERANCE units=3 rel=0.01\n") == Tolerance(3.0, 0.01)
    assert Tolerance.from_source("# NBVAL_CHECK_OUTPUT\nprint(1)") == Tolerance()
    with pytest.raises(ValueError, match="units=N"):
        Tolerance.from_source("# NBVAL_TOLERANCE unit=3")


def _notebook(cells):
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "sharp", "language": "python",
                                                                           "display_name": "Python (sharp)"}},
            "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": i + 1, "source": src,
                       "outputs": [{"output_type": "stream", "name": "stdout", "text": out}]}
                      for i, (src, out) in enumerate(cells)]}


def test_nbval_applies_the_tolerance(tmp_path):
    """Through nbval itself: a last-digit difference passes, a flipped verdict and a wider difference fail."""
    cells = [("# NBVAL_CHECK_OUTPUT\nprint(f'AUC {0.6066:.3f}: True')", "AUC 0.606: True\n"),  # 1 unit off: pass
             ("# NBVAL_CHECK_OUTPUT\nprint(f'drop ~{-0.44:.3f}')", "drop ~-0.446\n"),  # approximate: pass
             ("# NBVAL_CHECK_OUTPUT\nprint('AUC 0.606: False')", "AUC 0.606: True\n"),  # verdict flips: fail
             ("# NBVAL_CHECK_OUTPUT\n# NBVAL_TOLERANCE units=2\nprint('x 0.609')", "x 0.606\n")]  # 3 > 2: fail
    nb = tmp_path / "tolerance.ipynb"
    nb.write_text(json.dumps(_notebook(cells)))
    env = dict(os.environ, PYTHONPATH=str(paths.REPO_ROOT))
    proc = subprocess.run([sys.executable, "-m", "pytest", str(nb), "--nbval-lax", "--nbval-kernel-name", "sharp",
                           "-p", "tests.nbtolerance", "-p", "no:cacheprovider", "-n", "0", "-q", "-rA",
                           "--rootdir", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    cells = {c: o for o, c in re.findall(r"^(PASSED|FAILED) \S+::Cell (\d+)", proc.stdout, re.MULTILINE)}
    assert cells == {"0": "PASSED", "1": "PASSED", "2": "FAILED", "3": "FAILED"}, proc.stdout[-3000:]
