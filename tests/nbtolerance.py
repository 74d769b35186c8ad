"""Numbers in nbval-checked notebook outputs compared within a stated tolerance, not digit by digit.

torch chooses its CPU kernels at run time (``ATEN_CPU_CAPABILITY``: default / avx2 / avx512) and they round
differently, so a printed digit that one machine reproduces can move by one on the next.  The root ``conftest.py``
routes nbval's comparison of ``# NBVAL_CHECK_OUTPUT`` cells through :func:`reconcile_outputs`:

* all text that is not a number (labels, ``True`` / ``False`` verdicts, table layout) must match exactly;
* every number must agree with the committed one within ``units`` units of the committed number's last printed
  digit (default 1: a rounding flip), or within ``rel`` of it, whichever is larger;
* a number printed with a leading ``~`` (``~-0.446``) is approximate: chaotic at the sample size shown (one
  trajectory landing elsewhere moves it), so only its presence is checked, never its digits.

A cell states a wider tolerance on a comment line of its own: ``# NBVAL_TOLERANCE units=3 rel=0.01``.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass

# an optional "~", a sign, digits with an optional fraction (or a bare fraction), an optional exponent; not a
# digit glued to a letter or an underscore on its left (ids such as "fig2", "x_T", "t2"), so labels stay text
NUMBER = re.compile(r"(?<![\w.])(~?)([-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)")
TOLERANCE_LINE = re.compile(r"^\s*#\s*NBVAL_TOLERANCE\b(.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Tolerance:
    units: float = 1.0  # units of the committed number's last printed digit
    rel: float = 0.0  # relative to the committed number

    @classmethod
    def from_source(cls, source: str) -> "Tolerance":
        """The tolerance a cell states (``# NBVAL_TOLERANCE units=N rel=R``), else the default."""
        m = TOLERANCE_LINE.search(source)
        if not m:
            return cls()
        kw = {}
        for part in m.group(1).split():
            key, _, value = part.partition("=")
            if key not in ("units", "rel") or not value:
                raise ValueError(f"NBVAL_TOLERANCE takes units=N and rel=R, got {part!r}: write e.g. "
                                 "'# NBVAL_TOLERANCE units=2 rel=0.01'")
            kw[key] = float(value)
        return cls(**kw)


def last_digit_unit(token: str) -> float:
    """The value of one unit in the last printed digit: '0.606' -> 1e-3, '9e-02' -> 1e-2, '-4288' -> 1."""
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (int(exponent or 0) - decimals)


def numbers_agree(ref: str, test: str, tol: Tolerance = Tolerance()) -> bool:
    """Whether printed number ``test`` agrees with committed number ``ref`` within ``tol``."""
    a, b = float(ref), float(test)
    allowed = max(tol.units * last_digit_unit(ref), tol.rel * abs(a))
    return math.isclose(a, b, rel_tol=0.0, abs_tol=allowed * (1 + 1e-9))


def reconcile_text(ref: str, test: str, tol: Tolerance = Tolerance()) -> str:
    """``test`` with each number that agrees with its committed counterpart replaced by the committed literal.

    Where the text around the numbers differs, or the count of numbers does, ``test`` comes back unchanged, so
    the comparison that follows fails and shows the real difference.
    """
    ref_parts, test_parts = NUMBER.split(ref), NUMBER.split(test)
    if len(ref_parts) != len(test_parts):
        return test
    # split with two groups: [text, tilde, number, text, tilde, number, ..., text]
    out = []
    for i, (r, t) in enumerate(zip(ref_parts, test_parts)):
        if i % 3 < 2:  # text between numbers, or the "~" marker: must match
            if r != t:
                return test
            out.append(t)
        else:  # a number
            approximate = ref_parts[i - 1] == "~"
            out.append(r if approximate or numbers_agree(r, t, tol) else t)
    return "".join(out)


_TEXT_FIELDS = ("text/plain", "text/markdown", "text/html", "text/latex")


def reconcile_outputs(ref: list, test: list, tol: Tolerance = Tolerance()) -> list:
    """A copy of a cell's executed outputs with agreeing numbers set to the committed ones (see module doc).

    Outputs pair up by position when their type (and stream name) match; both lists as nbval passes them
    (streams coalesced).
    """
    out = copy.deepcopy(test)
    for r, t in zip(ref, out):
        if r.get("output_type") != t.get("output_type"):
            continue
        if t.get("output_type") == "stream":
            if r.get("name") == t.get("name") and isinstance(t.get("text"), str):
                t["text"] = reconcile_text(r.get("text", ""), t["text"], tol)
            continue
        rd, td = r.get("data", {}), t.get("data", {})
        for key in _TEXT_FIELDS:
            if isinstance(rd.get(key), str) and isinstance(td.get(key), str):
                td[key] = reconcile_text(rd[key], td[key], tol)
    return out


def pytest_configure(config):
    """Route nbval's comparison of checked cells through :func:`reconcile_outputs` (a pytest plugin hook)."""
    import nbval.plugin

    cell = nbval.plugin.IPyNbCell
    if getattr(cell.compare_outputs, "within_tolerance", False):
        return
    compare_exactly = cell.compare_outputs

    def compare_within_tolerance(self, test, ref, skip_compare=None):
        tol = Tolerance.from_source(self.cell.source)
        return compare_exactly(self, reconcile_outputs(ref, test, tol), ref, skip_compare)

    compare_within_tolerance.within_tolerance = True
    cell.compare_outputs = compare_within_tolerance
