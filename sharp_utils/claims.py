"""The paper's claims that the notebooks check, and the one line each notebook prints per claim.

A notebook calls :func:`report` with a claim's key, whether it held and the numbers behind it; the line it
prints (``claim held [key] (claim): True | numbers``) is the only place a result lives.
``scripts/claims_table.py`` reads those lines back from the executed notebooks (:func:`read_notebook_claims`)
and writes the claims table of ``README.md`` and ``docs/results.md`` (:func:`markdown_table`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Claim:
    paper: str  # where the paper states it
    text: str  # the claim in a few words
    model: str  # what it is checked on
    notebook: str  # file name under notebooks/
    figure: str = ""  # figure name under figures/ (without extension), if one shows it
    front: bool = False  # shown in the README's short table (all claims go to docs/results.md)


_NB = {i: n for i, n in enumerate(("", "01_toy_2d_mixture.ipynb", "02_mnist_9_vs_3.ipynb", "03_sd_eigen_spectra.ipynb",
                                    "04_trace_alignment.ipynb", "05_detection_table1.ipynb", "06_mitigation_fig6.ipynb",
                                    "07_regime_ablation.ipynb"))}
TOY, MNIST, GAUSS, MINISD = "toy 2D mixture", "MNIST 9-vs-3 (App. C)", "Gaussians (closed form)", "MiniSD v2"
MNIST_EXACT, MINISD_EXACT = "MNIST 9-vs-3, exact density", "MiniSD v2, exact density"

CLAIMS: dict[str, Claim] = {
    "fig1-end": Claim("Fig. 1", "memorized samples have a much sharper λ_min (≥ 10×) at the end of sampling", TOY, _NB[1],
                      "fig1_toy_2d_mixture", front=True),
    "fig1-middle": Claim("Fig. 1", "... already from the middle of sampling (t = T/2) on", TOY, _NB[1], "fig1_toy_2d_mixture"),
    "fig2-design": Claim("App. C", "guided '9' copies the one training nine, '3' copies no three", MNIST, _NB[2],
                         "fig2_mnist_generations"),
    "mnist-appc-regime": Claim("App. C", "unconditional samples copy the memorized nine ≤ 2 % (upper ≤ 3 %, n ≥ 500), "
                               "guided '9' ≥ 90 % (n ≥ 200), guided '3' no three", MNIST, _NB[2],
                               "fig2_mnist_generations"),
    "fig2-first": Claim("Fig. 2", "memorized: more negative eigenvalues at the first step t = T−1", MNIST, _NB[2],
                        "fig2_mnist_eigenvalues", front=True),
    "fig2-last": Claim("Fig. 2", "memorized: more negative eigenvalues at the last step t = 1", MNIST, _NB[2],
                       "fig2_mnist_eigenvalues", front=True),
    "fig2-exact-first": Claim("Fig. 2", "memorized: more negative eigenvalues at the first step t = T−1", MNIST_EXACT,
                              _NB[2], "fig2_mnist_eigenvalues"),
    "fig2-exact-last": Claim("Fig. 2", "memorized: more negative eigenvalues at the last step t = 1", MNIST_EXACT, _NB[2],
                             "fig2_mnist_eigenvalues", front=True),
    "alg1-few-iterations": Claim("§4.2, Alg. 1", "a few Arnoldi iterations separate the classes; FD keeps the JVP ranking",
                                 MNIST, _NB[2], "fig2_mnist_eigensolver_accuracy"),
    "minisd-uncond": Claim("regime", "unconditional generations (\"\", guidance 1) copy a memorized image ≤ 2 %", MINISD,
                           _NB[3], "minisd_memorization_check"),
    "minisd-em": Claim("regime", "EM prompts copy their memorized image at guidance 7.5 (≥ 60 % of generations)", MINISD,
                       _NB[3], "minisd_memorization_check"),
    "minisd-pm": Claim("regime", "PM prompts copy the template, not the content", MINISD, _NB[3], "minisd_memorization_check"),
    "minisd-nmem": Claim("regime", "non-memorized prompts give novel (≤ 2 % copies), aligned (≥ 90 %) images", MINISD,
                         _NB[3], "minisd_memorization_check"),
    "alg1-exact": Claim("Alg. 1", "Arnoldi recovers the sharpest eigenvalues of the exact spectrum within 1e-3", MINISD,
                        _NB[3], "fig3_eigen_spectra_minisd"),
    "fig3-first": Claim("Fig. 3", "memorized prompts sharper than non-memorized at t = T−1", MINISD, _NB[3],
                        "fig3_eigen_spectra_minisd", front=True),
    "fig3-last": Claim("Fig. 3", "memorized prompts sharper than non-memorized at t = 1", MINISD, _NB[3],
                       "fig3_eigen_spectra_minisd"),
    "fig3-em-pm-first": Claim("Fig. 3", "EM sharper than PM at t = T−1", MINISD, _NB[3], "fig3_eigen_spectra_minisd"),
    "fig3-em-pm-last": Claim("Fig. 3", "EM sharper than PM at t = 1", MINISD, _NB[3], "fig3_eigen_spectra_minisd"),
    "fig3-exact-first": Claim("Fig. 3", "memorized prompts sharper than non-memorized at t = T−1", MINISD_EXACT, _NB[3],
                              "fig3_eigen_spectra_minisd", front=True),
    "fig3-exact-last": Claim("Fig. 3", "memorized prompts sharper than non-memorized at t = 1", MINISD_EXACT, _NB[3],
                             "fig3_eigen_spectra_minisd"),
    "fig5-first": Claim("Fig. 5", "memorized: conditional sharper than unconditional, more than non-memorized, from t = T−1",
                        MINISD, _NB[3], "fig5_eigen_differences_minisd", front=True),
    "fig5-exact-appc": Claim("Fig. 5", "memorized: conditional sharper than unconditional, more than non-memorized, "
                               "from t = T−1", MINISD_EXACT, _NB[3], "fig5_eigen_differences_minisd"),
    "lemma-4.1-4.3": Claim("Lemmas 4.1, 4.3", "E‖s‖² = −tr H and E‖Hs‖² = −tr H³", GAUSS, _NB[4],
                           "fig4_gaussian_trace_alignment", front=True),
    "lemma-4.2-sec-4.4": Claim("Lemma 4.2, §4.4", "Wen's E‖s^Δ‖² and E‖H^Δ s^Δ‖² in closed form", GAUSS, _NB[4],
                               "fig4_gaussian_wen_lemma42", front=True),
    "appA4-identity": Claim("App. A.4", "E‖s^Δ‖² = squared Fisher–Rao distance to second order, at Σ = I", GAUSS, _NB[4],
                            "figA4_fisher_rao"),
    "appA4-general": Claim("App. A.4", "... for a general Σ (the paper's expansion)", GAUSS, _NB[4], "figA4_fisher_rao"),
    "fig4-mnist-lemma-4.1": Claim("Fig. 4", "‖s‖² tracks −tr H (log-log r > 0.9, median ratio within 2×)", MNIST, _NB[4],
                                  "fig4_mnist_trace_alignment"),
    "fig4-mnist-lemma-4.3": Claim("Fig. 4", "‖Hs‖² tracks −tr H³ (log-log r > 0.9, median ratio within 2×)", MNIST, _NB[4],
                                  "fig4_mnist_trace_alignment"),
    "fig4-mnist-last": Claim("Fig. 4", "‖s‖² tracks −tr H at the last step too", MNIST, _NB[4], "fig4_mnist_trace_alignment"),
    "fig4-sd-lemma-4.1": Claim("Fig. 4", "‖s‖² tracks −tr H (log-log r > 0.9, median ratio within 2×)", MINISD, _NB[4],
                               "fig4_minisd_trace_alignment", front=True),
    "fig4-sd-lemma-4.3": Claim("Fig. 4", "‖Hs‖² tracks −tr H³ (log-log r > 0.9, median ratio within 2×)", MINISD, _NB[4],
                               "fig4_minisd_trace_alignment", front=True),
    "fig4-sd-first": Claim("Fig. 4", "memorized prompts have the larger −tr H at the first step", MINISD, _NB[4],
                           "fig4_minisd_trace_alignment"),
    "table1-vs-wen": Claim("Table 1", "‖H^Δ s^Δ‖² at step 1 detects at least as well as Wen's ‖s^Δ‖ at step 1 (AUC, TPR@1%FPR)",
                           MINISD, _NB[5], "table1_roc_minisd", front=True),
    "table1-vs-full": Claim("Table 1", "... and as well as the best full-trajectory method (AUC within 0.01)", MINISD, _NB[5],
                            "table1_roc_minisd"),
    "table1-exact-appc": Claim("Table 1", "‖H^Δ s^Δ‖² at step 1 detects at least as well as Wen's ‖s^Δ‖ at step 1 "
                                 "(AUC, TPR@1%FPR)", MINISD_EXACT, _NB[5], "table1_roc_minisd", front=True),
    "fig6-lower": Claim("Fig. 6", "SAIL lowers the copy score at some setting", MINISD, _NB[6],
                        "fig6_mitigation_tradeoff_minisd", front=True),
    "fig6-pareto": Claim("Fig. 6", "SAIL is Pareto-better than every baseline where it lowers the copy score", MINISD,
                         _NB[6], "fig6_mitigation_tradeoff_minisd", front=True),
    "fig6-shell": Claim("§5", "SAIL's optimised x_T stays on the Gaussian shell (‖x_T‖²/d within 0.2 of 1)", MINISD, _NB[6],
                        "fig6_mitigation_tradeoff_minisd"),
    "fig6-exact-appc": Claim("Fig. 6", "SAIL lowers the copy score at some setting", MINISD_EXACT,
                               _NB[6], "fig6_mitigation_tradeoff_minisd"),
    "regime-v2": Claim("regime", "MiniSD v2 sits in SD's regime and the first MiniSD does not (unconditional copies "
                       "≤ 2 % vs above)", "MiniSD, both regimes", _NB[7], "regime_ablation_minisd", front=True),
    "regime-exact-sail": Claim("§5", "SAIL lowers the copy score where EM captions are dominant modes, not where they "
                               "are single images", "MiniSD, exact density (App. C pool)", _NB[7], "regime_ablation_minisd"),
    "regime-exact-wen50": Claim("Table 1", "Wen@50 detects better with App. C's unconditional pool than with the coupled "
                                "one", "MiniSD, exact density", _NB[7], "regime_ablation_minisd"),
}

_LINE = re.compile(r"^claim held \[(?P<key>[\w.-]+)\] \(.*\): (?P<held>True|False)(?: \| (?P<numbers>.*))?$")


def report(key: str, held: bool, numbers: str = "") -> None:
    """Print ``claim held [key] (claim): held | numbers`` for claim ``key`` of :data:`CLAIMS`."""
    if key not in CLAIMS:
        raise KeyError(f"claim {key!r} is not in sharp_utils.claims.CLAIMS: add it there first")
    print(f"claim held [{key}] ({CLAIMS[key].text}): {bool(held)}" + (f" | {numbers}" if numbers else ""))


def parse_claims(text: str) -> dict[str, tuple[bool, str]]:
    """``{key: (held, numbers)}`` of every claim line in ``text`` (printed by :func:`report`)."""
    out = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m:
            out[m["key"]] = (m["held"] == "True", m["numbers"] or "")
    return out


def read_notebook_claims(path: str | Path) -> dict[str, tuple[bool, str]]:
    """The claim lines printed in an executed notebook's stream outputs."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    text = "\n".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                     for o in c.get("outputs", []) if o.get("output_type") == "stream")
    return parse_claims(text)


def markdown_table(results: dict[str, tuple[bool, str]], front_only: bool = False, link_prefix: str = "") -> str:
    """The claims table in :data:`CLAIMS` order; ``link_prefix`` is the path from the page to the repository root."""
    rows = ["| paper | claim | checked on | held | numbers | notebook |", "| --- | --- | --- | --- | --- | --- |"]
    for key, c in CLAIMS.items():
        if front_only and not c.front:
            continue
        if key not in results:
            raise KeyError(f"claim {key!r} is printed by no executed notebook: rerun {c.notebook} (bash run_all.sh)")
        held, numbers = results[key]
        nb = f"[{c.notebook[:2]}]({link_prefix}notebooks/{c.notebook})"
        if c.figure:
            nb += f" · [fig]({link_prefix}figures/{c.figure}.png)"
        rows.append(f"| {c.paper} | {c.text} | {c.model} | {'**yes**' if held else 'no'} | {numbers} | {nb} |")
    return "\n".join(rows)
