"""The paper's claims that the notebooks check, the tests that decide each, and the one line a notebook prints.

Each claim names one or more tests: a statistic, the side of a line the claim puts it on ('<', '>' or 'in' a band)
and the line. A notebook calls :func:`report` with, per test, the statistic, its 95 % interval
(:mod:`sharp_utils.stats`;
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
                                    "07_regime_ablation.ipynb", "08_snr_sweep.ipynb"))}
TOY, MNIST, GAUSS, MINISD = "toy 2D mixture", "MNIST 9-vs-3 (App. C)", "Gaussians (closed form)", "MiniSD v2"
MNIST_EXACT, MINISD_EXACT = "MNIST 9-vs-3, exact density", "MiniSD v2, exact density"
_SNR = "MiniSD v2, exact density, latents × 4"

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
                            [Test("unconditional copy rate", "<", 0.02, "%"),
                             Test("guided '9' copy rate", ">", 0.9, "%"), Test("guided '3' copy rate", "<", 0.02, "%")],
                            "fig2_mnist_generations", kind="stand-in"),
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
                             Test("max gap of eigenvalue sums to the closed forms (commuting pairs)", "<", 1e-9,
                                  ".1e")],
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
                     [Test("mean copy-score drop at SAIL's best setting (positive = lower), paired over prompts",
                           ">", 0)],
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
    "snr-fig3": _c("hypothesis", "Fig. 3's first-step separation (memorized: fewer non-negative eigenvalues, a lower "
                   "mean) appears on the ideal model once ᾱ_T k² λ_max ≳ 1", _SNR, 8, [_NONNEG, _EXACT_MEAN],
                   "snr_sweep_minisd", kind="hypothesis"),
    "snr-fig5": _c("hypothesis", "Fig. 5's gap at t = T−1 (memorized: further below the unconditional spectrum) "
                   "appears once ᾱ_T k² λ_max ≳ 1", _SNR, 8, [_GAP], "snr_sweep_minisd", kind="hypothesis"),
    "snr-table1": _c("hypothesis", "ours@1 beats Wen@1 (Table 1) once the first step's signal-to-noise "
                     "ᾱ_T k² λ_max ≳ 1", _SNR, 8, [_AUC_DIFF], "snr_sweep_minisd", front=True, kind="hypothesis"),
    "snr-regime": _c("hypothesis", "the ideal model stays in SD's regime at that scale (unconditional copies < 2 %, EM "
                     "copies > 60 %)", _SNR, 8, [Test("unconditional copy rate of EM images", "<", 0.02, "%"),
                                                 Test("EM copy rate (guidance 7.5)", ">", 0.6, "%")],
                     "snr_sweep_minisd", kind="hypothesis"),
}


class Why(NamedTuple):
    """What the paper says (with its numbers), and why this project's verdict is what it is: one or two sentences per
    verdict a committed notebook has reached, pointing at the evidence."""
    says: str
    why: dict[str, str]


_SHARP_END = "at the end of sampling"
EXPLAINED: dict[str, Why] = {
    "fig1-end": Why("memorized (narrow-mode) samples show large negative eigenvalues late in sampling; broad-mode "
                    "samples stay near 0 (Fig. 1, no numbers)",
                    {HELD: "The narrow mode's learned λ_min ends near −900 against −13.5 in the broad mode: a peak "
                           "of width 0.005 is sharp " + _SHARP_END + " whatever the network."}),
    "fig1-middle": Why("the separation is visible from the middle of sampling on (Fig. 1)",
                       {NOT_HELD: "At t = 500 of DDPM's linear schedule both modes are blurred to covariance ≈ 0.92 I, "
                                  "so even the exact density has λ_min ≈ −1.1 in both; a 10× separation starts near "
                                  "t = 45."}),
    "fig2-design": Why("App. C: guided '9' collapses onto the one duplicated nine; '3' generates new threes",
                       {INCONCLUSIVE: "95 % of 64 nines copy (held); 0 of 64 threes copy, but 64 samples cannot put "
                                      "the interval (0–5.7 %) under 5 %: the regime claim decides it on 600."}),
    "mnist-appc-regime": Why("App. C's regime: the unconditional branch learns every image once, so memorization "
                             "lives in the conditional branch",
                             {HELD: "Measured on 3,200 generations of the App. C checkpoint: all three rates sit "
                                    "on their side of the bars fixed before training."}),
    "fig2-first": Why("memorized samples have more and larger negative eigenvalues already at t = T−1 (Fig. 2a)",
                      {INCONCLUSIVE: "At the first step every spectrum is ≈ −1/σ_t² ≈ −1 (x_T is almost pure "
                                     "noise): no eigenvalue is non-negative in either class and the top-10 means "
                                     "differ by < 0.01.",
                       HELD: "Both counts and top-10 means separate the classes at the first step."}),
    "fig2-last": Why("memorized samples have more and larger negative eigenvalues at t = 1 (Fig. 2b)",
                     {HELD: "At t = 1 generated nines sit on the one training nine: no non-negative eigenvalue (vs 18) "
                            "and top-10 means twice as negative."}),
    "fig2-exact-first": Why("(ideal model) the memorized class is sharper at t = T−1",
                            {HELD: "The '9' density is one point, so its Hessian is −I/σ_t², the sharpest possible; "
                                   "the threes' mixture is a hair less sharp (by 1.3e-5 in units of 1/σ_t²)."}),
    "fig2-exact-last": Why("(ideal model) the memorized class is sharper at t = 1",
                           {INCONCLUSIVE: "The exact density puts every sample on a training image at t = 1, threes "
                                          "included: both classes sit at −1/σ_t², a tie."}),
    "alg1-few-iterations": Why("Alg. 1: a few Arnoldi iterations (m ≪ d) reveal the difference; §5.1's finite "
                               "difference replaces the JVP",
                               {HELD: "At m = 10 the Ritz values are far from converged (40 % error) but already "
                                      "separate the classes; the forward FD ranks samples as the JVP does."}),
    "minisd-uncond": Why("(stand-in bar) SD's unconditional branch rarely reproduces a memorized image",
                         {HELD: "v2's unconditional pool holds each EM image once among 2,000 (App. C's design): 2 "
                                "of 1,000 samples copy one."}),
    "minisd-em": Why("(stand-in bar) memorized prompts copy their image at guidance 7.5",
                     {HELD: "90 % of 240 EM generations copy; 45 of 60 prompts copy in all 4."}),
    "minisd-pm": Why("(stand-in bar) template-memorized prompts copy a layout, not the content",
                     {HELD: "Every PM generation carries its frame and none copies a training image's content."}),
    "minisd-nmem": Why("(stand-in bar) non-memorized prompts give novel, aligned images",
                       {INCONCLUSIVE: "Copies (0.8 %) and alignment (90.0 % of 400) both have intervals across "
                                      "their bars: alignment sits exactly on its line."}),
    "alg1-exact": Why("Alg. 1's Arnoldi with Hessian-vector products finds the sharpest eigenvalues",
                      {HELD: "With Krylov dimension 101 the 3 most negative Ritz values match the dense spectrum to "
                             "float32 noise."}),
    "fig3-first": Why("memorized prompts: fewer non-negative, larger negative eigenvalues at t = T−1 (Fig. 3)",
                      {NOT_HELD: "At the first step every spectrum is ≈ −1 (pure noise): counts tie at 0 and PM's "
                                 "top-10 mean is a hair *less* negative (+0.003) than the non-memorized prompts'. "
                                 "[Notebook 08](../notebooks/08_snr_sweep.ipynb) scales the exact density's latents: "
                                 "no prompt has a non-negative eigenvalue at t = T−1 "
                                 "up to ᾱ_T k² λ_max = 0.38 (MiniSD: 0.17)."}),
    "fig3-last": Why("memorized prompts: fewer non-negative, larger negative eigenvalues at t = 1 (Fig. 3)",
                     {NOT_HELD: "Memorized prompts do have fewer non-negative eigenvalues, but their 10 most negative "
                                "are *less* negative (EM −469 vs −554): MiniSD's non-memorized images are also "
                                "sharp peaks at t = 1."}),
    "fig3-em-pm-first": Why("EM is sharper than PM (Fig. 3)",
                            {HELD: "EM's top-10 mean is below PM's at the first step, by 0.005 (tiny but "
                                   "consistent over 20 prompts each)."}),
    "fig3-em-pm-last": Why("EM is sharper than PM (Fig. 3)", {HELD: "At t = 1 EM's top-10 mean is 127 below PM's."}),
    "fig3-exact-first": Why("(ideal model) memorized prompts sharper at t = T−1",
                            {INCONCLUSIVE: "EM captions, one image each, are sharper (held); PM captions are many "
                                           "images with one frame and do not differ from non-memorized ones. "
                                           "[Notebook 08](../notebooks/08_snr_sweep.ipynb): at a larger "
                                           "first-step signal-to-noise the separation grows."}),
    "fig3-exact-last": Why("(ideal model) memorized prompts sharper at t = 1",
                           {INCONCLUSIVE: "At t = 1 the exact density sits on a training image for every caption: "
                                          "all categories tie at −1/σ_t²."}),
    "fig5-middle": Why("memorized prompts: the conditional Hessian's eigenvalues sit further below the "
                       "unconditional one's than non-memorized prompts' (Fig. 5, t = 20)",
                       {INCONCLUSIVE: "PM's gap is larger (held), EM's interval just crosses 0 (−3.2, −5.9 to 0.3)."}),
    "fig5-last": Why("... and at t = 1 (Fig. 5)",
                     {INCONCLUSIVE: "EM's gap is far larger (held); PM's is not distinguishable from non-memorized "
                                    "prompts'."}),
    "fig5-first": Why("(extension) the same gap at t = T−1, where the paper's detector works",
                      {NOT_HELD: "At the first step PM's gap is smaller than non-memorized prompts' and EM's ties."}),
    "fig5-exact-appc": Why("(extension, ideal model) the same gap at t = T−1",
                           {INCONCLUSIVE: "EM captions (one image, not in the unconditional pool's majority) show "
                                          "the gap; PM captions do not."}),
    "lemma-4.1-4.3": Why("Lemma 4.1: E‖s‖² = −tr H; Lemma 4.3: E‖Hs‖² = −tr H³ for a Gaussian",
                         {HELD: "Monte-Carlo means match the closed forms on 40 random Gaussians (after correcting "
                                "Lemma 4.3's H = −Σ to −Σ⁻¹)."}),
    "lemma-4.2-sec-4.4": Why("Lemma 4.2 (Wen's metric) and §4.4 (‖H^Δ s^Δ‖²) in closed form",
                             {HELD: "Both match Monte-Carlo on 40 pairs once the eigenvalues are those of −H, not H "
                                    "(the paper's statement flips a sign)."}),
    "appA4-identity": Why("App. A.4: E‖s^Δ‖² equals the squared Fisher–Rao distance to second order",
                          {HELD: "At Σ = I (the start of sampling) the ratio is 1.0000 at ε = 1e-4."}),
    "appA4-general": Why("App. A.4's expansion for a general Σ",
                         {NOT_HELD: "The appendix drops a Σ⁻¹: the ratio is 2.45 for a general Σ and 1.000 with it "
                                    "restored."}),
    "fig4-mnist-lemma-4.1": Why("Fig. 4: ‖s‖² tracks −tr H (log-log, points on the diagonal)",
                                {NOT_HELD: "Pooled over timesteps r is high only because σ_t scales both; within a "
                                           "timestep ‖s‖² is anti-correlated with −tr H. The lemma is about an "
                                           "expectation, not single samples."}),
    "fig4-mnist-lemma-4.3": Why("Fig. 4: ‖Hs‖² tracks −tr H³",
                                {NOT_HELD: "It correlates within a timestep but is ≈ 3× low at large t: the learned "
                                           "s ≈ −x there, and the radial derivative is what training constrains "
                                           "least."}),
    "fig4-sd-lemma-4.1": Why("Fig. 4 (SD): ‖s‖² tracks −tr H",
                             {NOT_HELD: "The ratios sit near 1 but within a step ‖s‖² is anti-correlated with −tr H, "
                                        "as on MNIST."}),
    "fig4-sd-lemma-4.3": Why("Fig. 4 (SD): ‖Hs‖² tracks −tr H³",
                             {NOT_HELD: "‖Hs‖² correlates with −tr H³ only from step 26 on, and runs 0.5–0.8× low."}),
    "fig4-sd-first": Why("(extension) memorized prompts have the larger −tr H at the first step",
                         {INCONCLUSIVE: "The median difference is +0.99 but its interval (−0.65 to 1.74, 14 vs 7 "
                                        "prompts) crosses 0."}),
    "table1-vs-wen": Why("Table 1 (SD v1.4, n = 4): ours@1 AUC 0.998, TPR@1%FPR 0.982 vs Wen@1 0.992 / 0.944",
                         {NOT_HELD: "On MiniSD v2 ours@1 reaches AUC 0.666 against Wen@1's 0.764; the exact density "
                                    "agrees (0.708 vs 0.833), so the ranking is a property of this data, not of an "
                                    "undertrained network. Nor is it MiniSD's small first-step signal-to-noise: on "
                                    "the ideal model ours@1 stays below Wen@1 up to 16× MiniSD's "
                                    "([notebook 08](../notebooks/08_snr_sweep.ipynb))."}),
    "table1-vs-full": Why("Table 1: ours@1 matches full-trajectory methods (BE 0.997, Wen@50 0.996 at n = 4)",
                          {NOT_HELD: "Wen@50 (0.951) and BE (0.945) work as in the paper; ours@1 is 0.285 below."}),
    "table1-exact-appc": Why("(ideal model) Table 1's ours@1 > Wen@1",
                             {NOT_HELD: "On the exact density ours@1 is 0.125 below Wen@1: first-step sharpness of "
                                        "a single memorized image is not what separates MiniSD's prompts; it stays "
                                        "below up to 16× MiniSD's first-step signal-to-noise "
                                        "([notebook 08](../notebooks/08_snr_sweep.ipynb))."}),
    "fig6-lower": Why("Fig. 6: SAIL lowers SSCD (copying) on SD while keeping CLIP score (no table of numbers)",
                      {INCONCLUSIVE: "Started from the unmitigated x_T, 413 of 600 x_T already met ℓ_thres at step 0, "
                                     "and the optimised ones still land in the memorized basin: the copy score stays "
                                     "at 0.92."}),
    "fig6-pareto": Why("Fig. 6: SAIL's curve dominates every baseline's",
                       {INCONCLUSIVE: "SAIL does not move the copy score, so it only leads on alignment, by "
                                      "amounts whose intervals mostly cross 0."}),
    "fig6-shell": Why("§5: the α‖x_T‖² term keeps x_T on the Gaussian shell", {
        HELD: "Every optimised x_T has ‖x_T‖²/d within 0.18 of 1."}),
    "fig6-exact-appc": Why("(ideal model) SAIL lowers the copy score",
                           {INCONCLUSIVE: "On the exact density SAIL leaves the copy score where it was too (−0.016, "
                                          "−0.052 to 0.012)."}),
    "regime-v2": Why("(ours) v2 sits in SD's regime (App. C's pool) and the first MiniSD does not",
                     {HELD: "Unconditional copies follow the pool: 0.2 % on v2, 25.4 % on the first MiniSD."}),
    "regime-exact-sail": Why("(ours) SAIL helps where an EM caption has other modes to escape to",
                             {INCONCLUSIVE: "With single-image captions SAIL cannot move (held), but with "
                                            "dominant-mode ones its drop (+0.005) has a wide interval across 0."}),
    "regime-exact-wen50": Why("(ours) App. C's pool makes Wen@50 detect better on the exact density",
                              {NOT_HELD: "It detects worse (−0.248): with every image in the unconditional pool, "
                                         "late-step s^Δ vanishes for every category."}),
    "snr-fig3": Why("(ours) the paper sees Fig. 3's separation at t = T−1 on SD and does not say what it rests on; "
                    "here: the first step's signal-to-noise ᾱ_T k² λ_max",
                    {INCONCLUSIVE: "At k = 4 every statistic leans the claimed way: the memorized mean eigenvalue is "
                                   "lower (EM −0.0082, PM −0.0046, both held) and EM has fewer non-negative "
                                   "eigenvalues (0 vs 1), but the counts are small integers: EM's interval [−1, 0] "
                                   "touches 0 and PM ties. No prompt has a non-negative eigenvalue up to k = 1.5; they "
                                   "appear where ᾱ_T k² λ(Cov_π) passes 1, as the closed form says (at k = 4 in 64 % "
                                   "of non-memorized, 47 % of EM prompts)."}),
    "snr-fig5": Why("(ours) Fig. 5's conditional − unconditional gap at t = T−1 appears with the signal-to-noise",
                    {HELD: "At k = 4 memorized captions sit further below the unconditional spectrum (EM −2.1, PM "
                           "−1.17 vs non-memorized). The ordering is already there at k = 1 (medians −0.51, −0.44 "
                           "vs −0.41): scale magnifies the gap (about as k²), it does not create it."}),
    "snr-table1": Why("(ours) Table 1's ours@1 > Wen@1 on SD comes from SD's larger first-step signal-to-noise",
                      {NOT_HELD: "At k = 4 ours@1 is 0.123 below Wen@1, as at k = 1 (−0.125). The sign flips only "
                                 "from k = 6 (held from k = 9), where both AUCs are at or below chance (Wen 0.31, "
                                 "ours 0.45 at k = 9): ours passes Wen because Wen inverts, not because ours "
                                 "detects. On the ideal model every caption is a finite set of images, so at high "
                                 "signal-to-noise non-memorized captions are as sharp as memorized ones."}),
    "snr-regime": Why("(ours) the ideal model stays in SD's regime at SD's signal-to-noise",
                      {NOT_HELD: "Unconditional samples never land on an EM image (0 of 300), but the EM copy rate "
                                 "falls with k (75 % at k = 1, 48 % at k = 4, 29 % at k = 13.5): once the likelihood "
                                 "outweighs the prior at T, x_T picks among the caption's four images almost "
                                 "regardless of the memorized image's 0.57 weight."}),
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


class Verdict(str):
    """A verdict string that Jupyter does not echo when a cell ends with :func:`report` (its line is printed)."""

    def _ipython_display_(self) -> None:
        pass


def report(key: str, *evidence: Ev | Sequence[Ev], note: str = "") -> str:
    """Print ``claim [key] VERDICT: claim | test: evidence (claim: side line) ...`` for claim ``key``; return
    VERDICT."""
    if key not in CLAIMS:
        raise KeyError(f"claim {key!r} is not in sharp_utils.claims.CLAIMS: add it there first")
    v, parts = judge(key, *evidence)
    texts = []
    for test, evs, vs in parts:
        several = len(evs) > 1 or len(parts) > 1  # name each verdict where more than one decides the claim
        items = "; ".join(evidence_text(test, e) + (f" ({w})" if several else "") for e, w in zip(evs, vs))
        texts.append(f"{test.stat} {_line_text(test)}: {items}")
    evidence_line = " · ".join(texts) + (f" · {note}" if note else "")
    print(f"claim [{key}] {v}: {CLAIMS[key].text} | {evidence_line}")
    _REPORTED[key] = (v, evidence_line)
    return Verdict(v)


_REPORTED: dict[str, tuple[str, str]] = {}  # what report() printed in this process: {key: (verdict, evidence)}
_RESULTS_MD = Path(__file__).resolve().parent.parent / "docs" / "results.md"


def results_section(notebook: str) -> str:
    """The anchor of docs/results.md's section on ``notebook`` (its heading starts with the notebook's number)."""
    for h in re.findall(r"^## (.+)$", _RESULTS_MD.read_text(encoding="utf-8"), re.M):
        if h.startswith(notebook[:2] + " "):
            return re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
    raise KeyError(f"docs/results.md has no '## {notebook[:2]} ...' section: add one for {notebook}")


def explain(key: str, verdict_: str) -> str:
    """Why claim ``key`` came out ``verdict_`` (:data:`EXPLAINED`), or a pointer to the evidence where no reason is
    recorded for that verdict (the result changed since the reason was written)."""
    why = EXPLAINED[key].why.get(verdict_)
    return why or f"(no reason recorded for '{verdict_}': the result changed; see the evidence and docs/results.md)"


class VerdictTable:
    """The verdicts of one notebook's claims, as a Markdown table in Jupyter and as text elsewhere."""

    def __init__(self, notebook: str, results: dict[str, tuple[str, str]]):
        self.notebook = notebook
        self.rows = [(key, CLAIMS[key], *results[key]) for key in CLAIMS
                     if CLAIMS[key].notebook == notebook and key in results]
        self.missing = [k for k, c in CLAIMS.items() if c.notebook == notebook and k not in results]

    def _repr_markdown_(self) -> str:
        out = ["| claim | the paper says | measured here: statistic [95 % CI], n | verdict | why |",
               "| --- | --- | --- | --- | --- |"]
        for key, c, v, ev in self.rows:
            paper = c.paper + _KIND[c.kind] if c.kind != "hypothesis" else "hypothesis (ours)"
            cells = [f"`{key}` {paper} on {c.model}: {c.text}", EXPLAINED[key].says, ev,
                     f"**{v}**", explain(key, v)]
            out.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
        anchor = results_section(self.notebook)
        out.append(f"\nEvidence and setup: [docs/results.md]({'../docs/results.md#' + anchor}); terms: "
                   "[glossary](../docs/glossary.md).")
        if self.missing:
            out.append(f"\nNot reported in this run (profile or model): {', '.join(self.missing)}.")
        return "\n".join(out)

    def __repr__(self) -> str:
        lines = [f"{key}: {v} — {explain(key, v)}" for key, _, v, _ in self.rows]
        return "\n".join(lines + ([f"not reported: {', '.join(self.missing)}"] if self.missing else []))


def verdicts(notebook: str) -> VerdictTable:
    """The verdict section a notebook ends with: per claim it reported in this kernel, the paper's statement, the
    evidence, the verdict and why (from :data:`EXPLAINED`)."""
    if notebook not in _NB.values():
        raise KeyError(f"{notebook!r} is not a notebook of sharp_utils.claims: use one of {sorted(_NB.values())[1:]}")
    return VerdictTable(notebook, _REPORTED)


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
    if not front_only:  # docs/results.md: why each verdict is what it is (EXPLAINED)
        rows = [rows[0][:-1] + " why |", rows[1] + " --- |"]
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
        why = "" if front_only else f" {explain(key, v)} |"
        rows.append(f"| {paper} | {c.text} | {c.model} | {shown} | {evidence.replace('|', '/')} | {nb} |{why}")
    return "\n".join(rows)
