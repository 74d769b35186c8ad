"""Each notebook's sizes per profile (smoke: seconds, CI; default: CPU minutes from the shipped checkpoints and the
committed results/; paper: the paper's scale, GPU recommended), in one place so that a notebook cell reads
``cfg = profile_config("05_detection_table1", profile)``."""
from __future__ import annotations

PROFILE_NAMES = ("smoke", "default", "paper")

PROFILES: dict[str, dict[str, dict]] = {}

PROFILES["01_toy_2d_mixture"] = {
    "smoke":   dict(n_samples=200,  num_steps=50,  retrain=False),
    "default": dict(n_samples=2000, num_steps=500, retrain=False),
    "paper":   dict(n_samples=2000, num_steps=500, retrain=True),
}

PROFILES["02_mnist_9_vs_3"] = {
    "smoke":   dict(n_gen=8,    n_jac=1,   num_steps=10,  retrain=False, krylov=(10, 20),                arpack=False),
    "default": dict(n_gen=64,   n_jac=20,  num_steps=50,  retrain=False, krylov=(10, 20, 40, 80),        arpack=True),
    "paper":   dict(n_gen=1000, n_jac=500, num_steps=500, retrain=True,  krylov=(10, 20, 40, 80, 160),   arpack=True),
}

# spectra: 'dense' = all 256 eigenvalues from the exact Jacobian, else the top k by Arnoldi (Krylov dim. 2k+1);
# regime figures: every EM prompt (dev + eval) x em_n, pm / nmem evaluation prompts x verify_n, n_uncond samples
# of "" (default: kept in results/03_sd_eigen_spectra/regime.csv, one row per image)
PROFILES["03_sd_eigen_spectra"] = {
    "smoke": dict(em_prompts=2, em_n=1, pm_prompts=2, nmem_prompts=2, verify_n=1, per_category=1, extra_inits=0,
                  dense=False, k=2, check_k=2, mid_step=0, num_steps=10, n_uncond=4),
    "default": dict(em_prompts=None, em_n=4, pm_prompts=None, nmem_prompts=None, verify_n=4, per_category=20,
                    extra_inits=2, dense=True, k=50, check_k=50, mid_step=30, num_steps=50, n_uncond=1000),
    "paper": dict(em_prompts=None, em_n=4, pm_prompts=None, nmem_prompts=None, verify_n=4, per_category=30,
                  extra_inits=2, dense=True, k=50, check_k=50, mid_step=30, num_steps=50, n_uncond=1000),
}

PROFILES["04_trace_alignment"] = {
    "smoke":   dict(n_cov=6,   dims=(2, 8),                 n_samples=2_000,   probes=64),
    "default": dict(n_cov=40,  dims=(2, 8, 32, 128),        n_samples=20_000,  probes=256),
    "paper":   dict(n_cov=200, dims=(2, 8, 32, 128, 512),   n_samples=100_000, probes=1024),
}

PROFILES["04_trace_alignment:mcfg"] = {  # Figure 4 on MNIST
    "smoke": dict(per_class=1, n_t=1, num_steps=10), "default": dict(per_class=10, n_t=3, num_steps=50),
    "paper": dict(per_class=10, n_t=10, num_steps=50)}

PROFILES["04_trace_alignment:msd"] = {  # Figure 4 on MiniSD: prompts per category, step indices (0 = step 1)
    "smoke": dict(per_cat=1, steps=(0,)), "default": dict(per_cat=7, steps=(0, 10, 25, 40, 49)),
    "paper": dict(per_cat=10, steps=(0, 5, 10, 20, 30, 40, 45, 49))}

PROFILES["05_detection_table1"] = {
    # runs: (methods, steps, ns); every run shares the per-(prompt, generation) seeds
    "smoke": dict(per_category=4, num_steps=10, runs=[
        (("wen", "ours-fd", "ours-jvp", "le", "anisotropy"), (1,), (1, 2)),
        (("tiled-l2", "ae", "be"), (10,), (2,))]),
    "default": dict(per_category=None, num_steps=50, runs=[  # the whole eval split: 30 EM, 25 PM, 100 non-memorized
        (("wen",), (1, 5), (1, 4)),
        (("ours-fd", "ours-jvp", "le", "anisotropy"), (1,), (1, 4)),
        (("wen", "ae", "be"), (50,), (1,))]),  # tiled l2 (needs n >= 2 full trajectories): paper profile
    "paper": dict(per_category=None, num_steps=50, runs=[
        (("wen", "ours-fd"), (1, 5, 50), (1, 4, 16)),
        (("ours-jvp", "le", "anisotropy"), (1,), (1, 4, 16)),
        (("tiled-l2", "ae", "be"), (50,), (1, 4, 16))]),
}

PROFILES["06_mitigation_fig6"] = {
    "smoke": dict(em=1, pm=0, n=1, settings=(2,), sail_max_steps=5),  # settings: indices into each method's grid
    "default": dict(em=None, pm=0, n=4, settings=(0, 1, 2, 3, 4), sail_max_steps=20),  # every EM eval prompt
    "paper": dict(em=None, pm=None, n=4, settings=(0, 1, 2, 3, 4), sail_max_steps=50),
}

# prompts of the eval split (EM: dev + eval); detection: em + pm vs nmem; SAIL: EM prompts
PROFILES["07_regime_ablation"] = {
    "smoke": dict(n_uncond=4, em_prompts=2, em_n=1, det_per_category=2, det_n=1, sep=0, sail_prompts=1, sail_n=1,
                  sail_max_steps=2, cal_prompts=4, mnist_uncond=4, mnist_nine=4, num_steps=10),
    # default: the sizes of notebooks 02, 03, 05 and 06 (every EM prompt x 4, the whole eval split x 4, 1,000
    # unconditional samples; SAIL on every EM eval prompt x 4; MNIST: 2,000 unconditional, 600 guided "9"); its rows
    # are kept in results/07_regime_ablation/ and only missing ones computed
    "default": dict(n_uncond=1000, em_prompts=None, em_n=4, det_per_category=None, det_n=4, sep=20, sail_prompts=None,
                    sail_n=4, sail_max_steps=20, cal_prompts=None, mnist_uncond=2000, mnist_nine=600, num_steps=50),
    "paper": dict(n_uncond=1000, em_prompts=None, em_n=4, det_per_category=None, det_n=4, sep=20, sail_prompts=None,
                  sail_n=4, sail_max_steps=50, cal_prompts=None, mnist_uncond=2000, mnist_nine=600, num_steps=50),
}


# the first step's signal-to-noise swept on MiniSD v2's exact density (snr_sweep.KS): Figure 3 / 5 on the eval split at
# notebook 03's shared x_T; Table 1 at step 1 on the eval split x det_n; exact guided sampling of every EM prompt
# (dev + eval) x em_n and n_uncond unconditional samples; default rows kept in results/08_snr_sweep/
PROFILES["08_snr_sweep"] = {
    "smoke": dict(per_category=3, det_n=2, em_prompts=3, em_n=1, n_uncond=10, num_steps=10, ks=(1.0, 4.0)),
    "default": dict(per_category=None, det_n=4, em_prompts=None, em_n=2, n_uncond=300, num_steps=50, ks=None),
    "paper": dict(per_category=None, det_n=4, em_prompts=None, em_n=4, n_uncond=1000, num_steps=50, ks=None),
}


def profile_config(notebook: str, profile: str) -> dict:
    """The sizes of ``notebook`` (its file stem, or 'stem:variable' for a second table) under ``profile``."""
    if profile not in PROFILE_NAMES:
        raise ValueError(f"profile {profile!r} is unknown: set profile to one of {PROFILE_NAMES} in the "
                         "parameters cell")
    if notebook not in PROFILES:
        raise KeyError(f"no profile table for {notebook!r}: add one to sharp_utils/profiles.py")
    return dict(PROFILES[notebook][profile])
