"""The library steps the notebooks call (evidence builders, the timestep label, profiles, Figure 6's summaries and
grid), each against numpy / scikit-learn or a hand-built case."""
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from sharp_utils import evidence, profiles, sampling
from sharp_utils.minisd import figure6
from sharp_utils.tradeoff import copy_rate, paired_lead, plot_grid, tradeoff_intervals


def test_step_label_is_the_papers_t_convention():
    sd = sampling.ddim_timesteps(1000, 50, 1)  # SD / MiniSD: steps_offset 1
    assert sampling.step_label(0, sd) == "step 1 of 50 (t = 981)"  # the paper's t = T-1
    assert sampling.step_label(49, sd) == "step 50 of 50 (t = 1)"  # the paper's t = 1
    toy = sampling.ddim_timesteps(1000, 500, 0)  # the toy / MNIST schedules index from 0
    assert sampling.step_label(499, toy) == "step 500 of 500 (t = 0)"


def test_evidence_builders_against_numpy_and_sklearn():
    rng = np.random.default_rng(0)
    x, y = rng.normal(1.0, 1.0, 30), rng.normal(0.0, 1.0, 40)
    ev = evidence.median_diff(x, y, "EM")
    assert ev.value == pytest.approx(np.median(x) - np.median(y)) and ev.n == "30 vs 40" and ev.at == "EM"
    assert ev.ci[0] < ev.ci[1]
    z = np.array([0.1, -5.0, 3.0, 4.49, -4.6])
    assert evidence.share_within(z, 4.5).value == pytest.approx(3 / 5)
    r = evidence.rate(3, 10)
    assert r.value == 0.3 and r.n == 10 and r.ci[0] < 0.3 < r.ci[1]

    is_mem = np.array([True] * 20 + [False] * 30)
    sa, sb = rng.normal(size=50) + is_mem, rng.normal(size=50) + 0.3 * is_mem
    rows = [{"prompt_index": i, "method": m, "steps": 1, "n": 4, "score": s[i]}
            for m, s in (("a", sa), ("b", sb)) for i in range(50)]
    gap = evidence.auc_gap(is_mem, rows, ("a", 1, 4), ("b", 1, 4))
    assert gap.value == pytest.approx(roc_auc_score(is_mem, sa) - roc_auc_score(is_mem, sb))
    assert gap.n == "20 vs 30"
    with pytest.raises(ValueError, match="run detection for both"):
        evidence.auc_gap(is_mem, rows, ("a", 1, 4), ("c", 1, 4))


def test_per_timestep_correlates_within_each_step():
    rng = np.random.default_rng(1)
    pts = [{"step": k, "tr": float(np.exp(rng.normal() + k)), "px": 0.0} for k in (0, 1) for _ in range(25)]
    for p in pts:
        p["px"] = p["tr"] * float(np.exp(0.1 * rng.normal()))
    r, ratio = evidence.per_timestep(pts, "tr", "px", "step", lambda k: f"step {k + 1}")
    for k, ev in zip((0, 1), r):
        pt = [p for p in pts if p["step"] == k]
        assert ev.value == pytest.approx(np.corrcoef(np.log10([p["tr"] for p in pt]),
                                                     np.log10([p["px"] for p in pt]))[0, 1])
        assert ev.at == f"step {k + 1}" and ev.n == 25
    assert ratio[0].value == pytest.approx(np.median([p["px"] / p["tr"] for p in pts if p["step"] == 0]))


def test_profiles_cover_every_notebook_and_name_the_fix():
    for name in profiles.PROFILES:
        for profile in profiles.PROFILE_NAMES:
            assert profiles.profile_config(name, profile)
    with pytest.raises(ValueError, match="parameters cell"):
        profiles.profile_config("05_detection_table1", "fast")


def _rows(tmp_path):
    """Two prompts x 2 generations: no mitigation copies; SAIL at 2.0 changes prompt 1's images, at 1.0 it does not."""
    from sharp_utils.image_scorers import save_image

    rows = []
    for pi in (0, 1):
        for g in (0, 1):
            for m, s, copy, shade in (("none", 0.0, 0.9, 0.5), ("sail", 1.0, 0.9, 0.5),
                                      ("sail", 2.0, 0.9 if pi == 0 else 0.2, 0.5 if pi == 0 else 1.0),
                                      ("redraw", 2.0, 0.5, 0.3), ("rta", 4.0, 0.6 + 0.1 * pi, 0.4)):
                name = f"images/{m}_{s}_{pi}_{g}.png"
                save_image(torch.full((3, 4, 4), shade), tmp_path / name)
                rows.append({"prompt_index": str(pi), "method": m, "setting": str(s), "generation": str(g),
                             "copy_score": str(copy + 0.01 * g), "alignment": str(0.9 + 0.01 * g), "image": name})
    return rows


def test_tradeoff_intervals_and_sails_best_setting(tmp_path):
    rows = _rows(tmp_path)
    pts = tradeoff_intervals(rows)
    rta = pts["rta"][0]
    assert rta["copy_score"] == pytest.approx(np.mean([0.605, 0.705]))  # mean over prompts of per-prompt means
    assert rta["copy_score_ci"][0] <= rta["copy_score"] <= rta["copy_score_ci"][1]
    assert figure6.best_sail(rows) == 2.0  # the lower mean copy score
    ev = figure6.lower_evidence(rows, 2)
    assert ev.value == pytest.approx(paired_lead(rows, ("sail", 2.0), ("none", 0))[0])
    assert ev.value == pytest.approx((0.0 + 0.7) / 2) and ev.n == "2 prompts × 2"
    assert copy_rate(rows, "sail", 2.0, 0.5) == 0.5


def test_grid_shows_the_training_image_and_sails_most_changed_setting(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from sharp_utils.image_scorers import save_image

    rows = _rows(tmp_path)
    ref = tmp_path / "ref.png"
    save_image(torch.zeros(3, 4, 4), ref)
    fig = plot_grid(rows, tmp_path, n_prompts=2, references=[[ref], [ref]])
    titles = [ax.get_title() for ax in fig.axes[:6]]
    assert titles[0] == "training image" and "SAIL" in titles
    sail_col = titles.index("SAIL")
    first_row = fig.axes[sail_col].get_xlabel()  # prompt 1 comes first: SAIL changes its image most
    assert fig.axes[0].get_xlabel() == "prompt 1" and first_row.startswith("2 · copy 0.20")
