"""The paper's claims that the notebooks check, the tests that decide each, and the one line a notebook prints.

Each claim names one or more tests: a statistic, the side of a line the claim puts it on ('<', '>' or 'in' a band)
and the line. A notebook calls :func:`report` with, per test, the statistic, its 95 % interval (:mod:`sharp_utils.stats`;
``None`` for an exact computation) and n; :func:`report` prints ``claim [key] VERDICT: claim | evidence`` with VERDICT
one of **held** (every interval entirely on the claimed side), **not held** (some interval entirely on the other side)
or **inconclusive** (otherwise: a tie or an interval across the line). ``scripts/claims_table.py`` reads those
lines back from the executed notebooks (:func:`read_notebook_claims`) and writes the claims tables
(:func:`markdown_table`). ``kind`` says whose claim it is: the paper's, an extension of it (another step or
statistic than the paper's), a stand-in's bar, or this project's hypothesis.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

from .stats import HELD, INCONCLUSIVE, NOT_HELD, combine, verdict


@dataclass(frozen=True)
class Test:
    stat: str  # the statistic, in a few words
    side: str  # '<', '>' or 'in'
    line: float | tuple[float, float]  # the line (or the band for 'in')
    fmt: str = ".3g"  # how its numbers print ('%' for rates)


@dataclass(frozen=True)
class Claim:
    paper: str  # where the paper states it
    text: str  # the claim in a few words
    model: str  # what it is checked on
    notebook: str  # file name under notebooks/
    tests: tuple[Test, ...]  # every test must hold for the claim to hold
    figure: str = ""  # figure name under figures/ (without extension), if one shows it
    front: bool = False  # shown in the README's short table (all claims go to docs/results.md)
    kind: str = "paper"  # paper | extension | stand-in | hypothesis


class Ev(NamedTuple):
    """One test's evidence: the statistic, its 95 % interval (None: exact, no sampling) and n (a count or a
    description such as '55 vs 100'); ``at`` labels one of several (e.g. a timestep)."""
    value: float
    ci: tuple[float, float] | None
    n: int | str
    at: str = ""


_NB = {i: n for i, n in enumerate(("", "01_toy_2d_mixture.ipynb", "02_mnist_9_vs_3.ipynb", "03_sd_eigen_spectra.ipynb",
                                    "04_trace_alignment.ipynb", "05_detection_table1.ipynb", "06_mitigation_fig6.ipynb",
                                    "07_regime_ablation.ipynb"))}
TOY, MNIST, GAUSS, MINISD = "toy 2D mixture", "MNIST 9-vs-3 (App. C)", "Gaussians (closed form)", "MiniSD v2"
MNIST_EXACT, MINISD_EXACT = "MNIST 9-vs-3, exact density", "MiniSD v2, exact density"

_LAMBDA_RATIO = Test("median λ_min, memorized / non-memorized", ">", 10, ".4g")
_NONNEG = Test("median count of non-negative eigenvalues, memorized − non-memorized", "<", 0)
_TOP10 = Test("median mean of the 10 most negative eigenvalues, memorized − non-memorized", "<", 0)
_EXACT_MEAN = Test("median mean eigenvalue × σ_t², memorized − non-memorized", "<", 0, ".2g")
_GAP = Test("median sum of negative eigenvalue differences (conditional − unconditional), memorized − non-memorized "
            "(per memorized category)", "<", 0)
_WITHIN_SE = lambda what: Test(f"share of {what} within 4.5 SE of the closed form", ">", 0.9, "%")
_R = Test("log-log Pearson r of the proxy vs the trace, within one timestep", ">", 0.9, ".2f")
_RATIO = Test("median ratio proxy / trace", "in", (0.5, 2.0), ".2f")
_AUC_DIFF = Test("AUC(ours@1) − AUC(Wen@1), paired over prompts", ">", 0)


def _c(paper, text, model, nb, tests, figure="", **kw):
    return Claim(paper, text, model, _NB[nb], tuple(tests), figure, **kw)


CLAIMS: dict[str, Claim] = {
    "fig1-end": _c("Fig. 1", "memorized samples have a much sharper λ_min (≥ 10×) at the end of sampling", TOY, 1,
                   [_LAMBDA_RATIO], "fig1_toy_2d_mixture", front=True),
    "fig1-middle": _c("Fig. 1", "... already from the middle of sampling (t = T/2) on", TOY, 1, [_LAMBDA_RATIO],
                      "fig1_toy_2d_mixture", front=True),
    "fig2-design": _c("App. C", "guided '9' copies the one training nine, '3' copies no three", MNIST, 2,
                      [Test("guided '9' copy rate", ">", 0.5, "%"), Test("guided '3' copy rate", "<", 0.05, "%")],
                      "fig2_mnist_generations", kind="stand-in"),
    "mnist-appc-regime": _c("App. C", "unconditional samples copy the memorized nine < 2 %, guided '9' > 90 %, "
                            "guided '3' < 2 %", MNIST, 2,
                            [Test("unconditional copy rate", "<", 0.02, "%"), Test("guided '9' copy rate", ">", 0.9, "%"),
                             Test("guided '3' copy rate", "<", 0.02, "%")], "fig2_mnist_generations", kind="stand-in"),
    "fig2-first": _c("Fig. 2", "memorized: more and larger negative eigenvalues at the first step t = T−1", MNIST, 2,
                     [_NONNEG, _TOP10], "fig2_mnist_eigenvalues", front=True),
    "fig2-last": _c("Fig. 2", "memorized: more and larger negative eigenvalues at the last step t = 1", MNIST, 2,
                    [_NONNEG, _TOP10], "fig2_mnist_eigenvalues", front=True),
    "fig2-exact-first": _c("Fig. 2", "memorized: sharper at the first step t = T−1", MNIST_EXACT, 2, [_EXACT_MEAN],
                           "fig2_mnist_eigenvalues"),
    "fig2-exact-last": _c("Fig. 2", "memorized: sharper at the last step t = 1", MNIST_EXACT, 2, [_EXACT_MEAN],
                          "fig2_mnist_eigenvalues"),
    "alg1-few-iterations": _c("§4.2, Alg. 1", "a few Arnoldi iterations separate the classes; FD keeps the JVP ranking",
                              MNIST, 2, [Test("top-10 Ritz mean at m = 10, memorized − non-memorized", "<", 0),
                                         Test("Spearman ρ of ‖H^Δ s^Δ‖² by forward FD vs JVP", ">", 0.95, ".2f")],
                              "fig2_mnist_eigensolver_accuracy"),
    "minisd-uncond": _c("stand-in bar", "unconditional generations (\"\", guidance 1) copy a memorized image < 2 %",
                        MINISD, 3, [Test("unconditional copy rate", "<", 0.02, "%")], "minisd_memorization_check",
                        kind="stand-in"),
    "minisd-em": _c("stand-in bar", "EM prompts copy their memorized image at guidance 7.5 (> 60 % of generations)",
                    MINISD, 3, [Test("EM copy rate", ">", 0.6, "%")], "minisd_memorization_check", kind="stand-in"),
    "minisd-pm": _c("stand-in bar", "PM prompts copy the template, not the content", MINISD, 3,
                    [Test("share of PM frame scores above the non-memorized 99th percentile", ">", 0.5, "%"),
                     Test("PM content copy rate", "<", 0.5, "%")], "minisd_memorization_check", kind="stand-in"),
    "minisd-nmem": _c("stand-in bar", "non-memorized prompts give novel (< 2 % copies), aligned (> 90 %) images",
                      MINISD, 3, [Test("copy rate", "<", 0.02, "%"), Test("aligned rate", ">", 0.9, "%")],
                      "minisd_memorization_check", kind="stand-in"),
    "alg1-exact": _c("Alg. 1", "Arnoldi recovers the sharpest eigenvalues of the exact spectrum within 1e-3", MINISD, 3,
                     [Test("max relative error of the 3 most negative Ritz values", "<", 1e-3, ".1e")],
                     "fig3_eigen_spectra_minisd"),
    "fig3-first": _c("Fig. 3", "memorized prompts: fewer non-negative and larger negative eigenvalues at t = T−1",
                     MINISD, 3, [_NONNEG, _TOP10], "fig3_eigen_spectra_minisd", front=True),
    "fig3-last": _c("Fig. 3", "memorized prompts: fewer non-negative and larger negative eigenvalues at t = 1", MINISD,
                    3, [_NONNEG, _TOP10], "fig3_eigen_spectra_minisd"),
    "fig3-em-pm-first": _c("Fig. 3", "EM sharper than PM at t = T−1", MINISD, 3,
                           [Test("median top-10 mean, EM − PM", "<", 0)], "fig3_eigen_spectra_minisd"),
    "fig3-em-pm-last": _c("Fig. 3", "EM sharper than PM at t = 1", MINISD, 3,
                          [Test("median top-10 mean, EM − PM", "<", 0)], "fig3_eigen_spectra_minisd"),
    "fig3-exact-first": _c("Fig. 3", "memorized prompts sharper than non-memorized at t = T−1", MINISD_EXACT, 3,
                           [_EXACT_MEAN], "fig3_eigen_spectra_minisd"),
    "fig3-exact-last": _c("Fig. 3", "memorized prompts sharper than non-memorized at t = 1", MINISD_EXACT, 3,
                          [_EXACT_MEAN], "fig3_eigen_spectra_minisd"),
    "fig5-middle": _c("Fig. 5", "memorized: a larger conditional − unconditional eigenvalue gap than non-memorized at "
                      "an intermediate step", MINISD, 3, [_GAP], "fig5_eigen_differences_minisd", front=True),
    "fig5-last": _c("Fig. 5", "... and at the final step t = 1", MINISD, 3, [_GAP], "fig5_eigen_differences_minisd",
                    front=True),
    "fig5-first": _c("Fig. 5 at t = T−1", "the same gap already at the first step", MINISD, 3, [_GAP],
                     "fig5_eigen_differences_minisd", kind="extension"),
    "fig5-exact-appc": _c("Fig. 5 at t = T−1", "the same gap already at the first step", MINISD_EXACT, 3, [_GAP],
                          "fig5_eigen_differences_minisd", kind="extension"),
    "lemma-4.1-4.3": _c("Lemmas 4.1, 4.3", "E‖s‖² = −tr H and E‖Hs‖² = −tr H³", GAUSS, 4,
                        [_WITHIN_SE("Lemma 4.1 checks"), _WITHIN_SE("Lemma 4.3 checks")],
                        "fig4_gaussian_trace_alignment", front=True),
    "lemma-4.2-sec-4.4": _c("Lemma 4.2, §4.4", "Wen's E‖s^Δ‖² and E‖H^Δ s^Δ‖² in closed form", GAUSS, 4,
                            [_WITHIN_SE("Lemma 4.2 checks"), _WITHIN_SE("§4.4 checks"),
                             Test("max gap of eigenvalue sums to the closed forms (commuting pairs)", "<", 1e-9, ".1e")],
                            "fig4_gaussian_wen_lemma42"),
    "appA4-identity": _c("App. A.4", "E‖s^Δ‖² = squared Fisher–Rao distance to second order, at Σ = I", GAUSS, 4,
                         [Test("E‖s^Δ‖² / d_FR² at ε = 1e-4", "in", (0.999, 1.001), ".4f")], "figA4_fisher_rao"),
    "appA4-general": _c("App. A.4", "... for a general Σ (the paper's expansion)", GAUSS, 4,
                        [Test("E‖s^Δ‖² / d_FR² at ε = 1e-4", "in", (0.999, 1.001), ".4f")], "figA4_fisher_rao"),
    "fig4-mnist-lemma-4.1": _c("Fig. 4", "‖s‖² tracks −tr H at every timestep (r > 0.9, median ratio within 2×)", MNIST,
                               4, [_R, _RATIO], "fig4_mnist_trace_alignment"),
    "fig4-mnist-lemma-4.3": _c("Fig. 4", "‖Hs‖² tracks −tr H³ at every timestep (r > 0.9, median ratio within 2×)",
                               MNIST, 4, [_R, _RATIO], "fig4_mnist_trace_alignment"),
    "fig4-sd-lemma-4.1": _c("Fig. 4", "‖s‖² tracks −tr H at every timestep (r > 0.9, median ratio within 2×)", MINISD,
                            4, [_R, _RATIO], "fig4_minisd_trace_alignment", front=True),
    "fig4-sd-lemma-4.3": _c("Fig. 4", "‖Hs‖² tracks −tr H³ at every timestep (r > 0.9, median ratio within 2×)",
                            MINISD, 4, [_R, _RATIO], "fig4_minisd_trace_alignment"),
    "fig4-sd-first": _c("§4.3", "memorized prompts have the larger −tr H at the first step", MINISD, 4,
                        [Test("median −tr H, memorized − non-memorized", ">", 0)], "fig4_minisd_trace_alignment",
                        kind="extension"),
    "table1-vs-wen": _c("Table 1", "‖H^Δ s^Δ‖² at step 1 detects better than Wen's ‖s^Δ‖ at step 1", MINISD, 5,
                        [_AUC_DIFF], "table1_roc_minisd", front=True),
    "table1-vs-full": _c("Table 1", "... and as well as the best full-trajectory method (AUC within 0.01)", MINISD, 5,
                         [Test("AUC(ours@1) − AUC(best full-trajectory method), paired", ">", -0.01)],
                         "table1_roc_minisd"),
    "table1-exact-appc": _c("Table 1", "‖H^Δ s^Δ‖² at step 1 detects better than Wen's ‖s^Δ‖ at step 1", MINISD_EXACT,
                            5, [_AUC_DIFF], "table1_roc_minisd"),
    "fig6-lower": _c("Fig. 6", "SAIL lowers the copy score at some setting", MINISD, 6,
                     [Test("mean copy-score drop at SAIL's best setting (positive = lower), paired over prompts", ">", 0)],
                     "fig6_mitigation_tradeoff_minisd", front=True),
    "fig6-pareto": _c("Fig. 6", "SAIL is Pareto-better than every baseline where it lowers the copy score", MINISD, 6,
                      [Test("SAIL's lead over a baseline's closest setting (copy-score lead, or alignment lead "
                            "where no setting aligns as well), paired over prompts", ">", 0)],
                      "fig6_mitigation_tradeoff_minisd", front=True),
    "fig6-shell": _c("§5", "SAIL's optimised x_T stays on the Gaussian shell (‖x_T‖²/d within 0.2 of 1)", MINISD, 6,
                     [Test("max |‖x_T‖²/d − 1| over optimised x_T", "<", 0.2, ".2f")],
                     "fig6_mitigation_tradeoff_minisd"),
    "fig6-exact-appc": _c("Fig. 6", "SAIL lowers the copy score at some setting", MINISD_EXACT, 6,
                          [Test("mean copy-score drop at SAIL's best setting (positive = lower), paired over prompts",
                                ">", 0)], "fig6_mitigation_tradeoff_minisd"),
    "regime-v2": _c("hypothesis", "MiniSD v2 sits in SD's regime and the first MiniSD does not (unconditional copies "
                    "< 2 % vs above)", "MiniSD, both regimes", 7,
                    [Test("unconditional copy rate, v2", "<", 0.02, "%"),
                     Test("unconditional copy rate, first MiniSD", ">", 0.02, "%")], "regime_ablation_minisd",
                    front=True, kind="hypothesis"),
    "regime-exact-sail": _c("hypothesis", "SAIL lowers the copy score where EM captions are dominant modes, not where "
                            "they are single images", "MiniSD, exact density (App. C pool)", 7,
                            [Test("SAIL's copy-score drop, dominant EM (positive = lower)", ">", 0),
                             Test("SAIL's copy-score drop, single-image EM", "<", 0.01)], "regime_ablation_minisd",
                            kind="hypothesis"),
    "regime-exact-wen50": _c("hypothesis", "Wen@50 detects better with App. C's unconditional pool than with the "
                             "coupled one", "MiniSD, exact density", 7,
                             [Test("Wen@50 AUC, App. C pool − coupled pool, paired over prompts", ">", 0)],
                             "regime_ablation_minisd", kind="hypothesis"),
}

VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE)
_LINE = re.compile(r"^claim \[(?P<key>[\w.-]+)\] (?P<verdict>held|not held|inconclusive): .*? \| (?P<evidence>.*)$")


def _num(x: float, fmt: str) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return f"{100 * x:.1f}%" if fmt == "%" else format(x, fmt)


def _line_text(test: Test) -> str:
    if test.side == "in":
        return f"in ({_num(test.line[0], test.fmt)}, {_num(test.line[1], test.fmt)})"
    return f"{test.side} {_num(test.line, test.fmt)}"


def evidence_text(test: Test, ev: Ev) -> str:
    """``stat = value [lo, hi], n = N`` (``exact`` in place of an interval where nothing was sampled)."""
    ci = "exact" if ev.ci is None else f"[{_num(ev.ci[0], test.fmt)}, {_num(ev.ci[1], test.fmt)}]"
    at = f" at {ev.at}" if ev.at else ""
    return f"{_num(ev.value, test.fmt)} {ci}{at}, n = {ev.n}"


def judge(key: str, *evidence: Ev | Sequence[Ev]) -> tuple[str, list[tuple[Test, list[Ev], list[str]]]]:
    """The claim's verdict and, per test, its evidence and verdicts (one ``Ev`` or a list, e.g. one per timestep)."""
    claim = CLAIMS[key]
    if len(evidence) != len(claim.tests):
        raise ValueError(f"claim {key!r} has {len(claim.tests)} tests; report got {len(evidence)} pieces of evidence")
    parts = []
    for test, ev in zip(claim.tests, evidence):
        evs = [ev] if isinstance(ev, Ev) else [Ev(*e) for e in ev]
        parts.append((test, evs, [verdict(e.ci, e.value, test.side, test.line) for e in evs]))
    return combine([v for _, _, vs in parts for v in vs]), parts


def report(key: str, *evidence: Ev | Sequence[Ev], note: str = "") -> str:
    """Print ``claim [key] VERDICT: claim | test: evidence (claim: side line) ...`` for claim ``key``; return VERDICT."""
    if key not in CLAIMS:
        raise KeyError(f"claim {key!r} is not in sharp_utils.claims.CLAIMS: add it there first")
    v, parts = judge(key, *evidence)
    texts = []
    for test, evs, vs in parts:
        several = len(evs) > 1 or len(parts) > 1  # name each verdict where more than one decides the claim
        items = "; ".join(evidence_text(test, e) + (f" ({w})" if several else "") for e, w in zip(evs, vs))
        texts.append(f"{test.stat} {_line_text(test)}: {items}")
    print(f"claim [{key}] {v}: {CLAIMS[key].text} | " + " · ".join(texts) + (f" · {note}" if note else ""))
    return v


def parse_claims(text: str) -> dict[str, tuple[str, str]]:
    """``{key: (verdict, evidence)}`` of every claim line in ``text`` (printed by :func:`report`)."""
    out = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m:
            out[m["key"]] = (m["verdict"], m["evidence"])
    return out


def read_notebook_claims(path: str | Path) -> dict[str, tuple[str, str]]:
    """The claim lines printed in an executed notebook's stream outputs."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    text = "\n".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                     for o in c.get("outputs", []) if o.get("output_type") == "stream")
    return parse_claims(text)


_KIND = {"paper": "", "extension": " (extension)", "stand-in": " (stand-in)", "hypothesis": " (ours)"}


def markdown_table(results: dict[str, tuple[str, str]], front_only: bool = False, link_prefix: str = "") -> str:
    """The claims table in :data:`CLAIMS` order (``front_only``: the README's claims, numbers without the statistics'
    names); ``link_prefix`` is the path from the page to the repository root."""
    rows = ["| paper | claim | checked on | verdict | statistic [95 % CI], n | notebook |",
            "| --- | --- | --- | --- | --- | --- |"]
    for key, c in CLAIMS.items():
        if front_only and not c.front:
            continue
        if key not in results:
            raise KeyError(f"claim {key!r} is printed by no executed notebook: rerun {c.notebook} (bash run_all.sh)")
        v, evidence = results[key]
        if front_only:  # the README's short table: the numbers only, the first of several (all in docs/results.md)
            for test in c.tests:
                evidence = evidence.replace(f"{test.stat} {_line_text(test)}: ", "")
            parts = evidence.split(" · ")
            shown = []
            for k, part in enumerate(parts):
                items = part.split("; ")
                if k >= len(c.tests) or len(items) == 1:  # a note, or a test with one piece of evidence
                    shown.append(part)
                    continue
                pick = next((x for x in items if x.endswith(f"({v})")), items[0])  # one that decides the verdict
                shown.append(pick + f"; … {len(items) - 1} more")
            evidence = " · ".join(shown)
        nb = f"[{c.notebook[:2]}]({link_prefix}notebooks/{c.notebook})"
        if c.figure and not front_only:
            nb += f" · [fig]({link_prefix}figures/{c.figure}.png)"
        paper = c.paper + _KIND[c.kind] if c.kind != "hypothesis" else "hypothesis (ours)"
        shown = f"**{v}**" if v == HELD else v
        rows.append(f"| {paper} | {c.text} | {c.model} | {shown} | {evidence.replace('|', '/')} | {nb} |")
    return "\n".join(rows)
