"""MiniSD's evaluators (copy score ≈ SSCD, alignment ≈ CLIP score) and the experiment helpers of notebooks 03–06."""
import numpy as np
import pytest
import torch

from sharp_utils import minisd as M
from sharp_utils.minisd import evaluators as E
from sharp_utils.prompts import pick
from sharp_utils import calibration, path_spectra, registry, sampling
from sharp_utils.minisd import experiments, training_set
from sharp_utils.hessian import jacobian_batched
from sharp_utils.pipeline import PipelineScoreModel
from sharp_utils.sampling import sample_ddim
from sharp_utils.image_scorers import copy_scores
from sharp_utils.tiny_sd import build_tiny_pipeline


@pytest.fixture(scope="module")
def data():
    return M.build_data(seed=0, design="coupled")  # the 5,000 images the evaluators were trained and validated on


@pytest.fixture(scope="module")
def scorers():
    return E.load_evaluators()


def test_parse_caption_reads_every_caption_pattern():
    red, cyan = E.COLOUR_NAMES.index("red"), E.COLOUR_NAMES.index("cyan")
    assert E.parse_caption("a red seven called quiet lantern") == {"digit": 7, "colour": red, "frame": 0}
    assert E.parse_caption("a three inside the dotted ring") == {"digit": 3, "colour": None, "frame": 4}
    assert E.parse_caption("cyan digit nine on a black background") == {"digit": 9, "colour": cyan, "frame": 0}
    assert E.parse_caption("The number ZERO written in red ink 4821") == {"digit": 0, "colour": red, "frame": 0}


def test_sibling_captions_against_a_counted_oracle(data):
    caps = ["a red seven called quiet lantern", "a red seven called frozen river", "a blue seven called quiet lantern",
            "a red one called frozen river"]
    assert E.sibling_captions(caps) == [True, True, False, False]
    # the shipped EM captions: 32 of 60 share colour and digit with another one, each with a partner by brute force
    em = [r["caption"] for r in data["records"] if r["category"] == "em"]
    key = [(E.parse_caption(c)["colour"], E.parse_caption(c)["digit"]) for c in em]
    oracle = [any(key[i] == key[j] for j in range(len(em)) if j != i) for i in range(len(em))]
    assert E.sibling_captions(em) == oracle and sum(oracle) == 32 and len(em) == 60


def test_image_labels_match_the_construction(data):
    lab = E.image_labels(data)
    for r in data["records"]:
        p = E.parse_caption(r["caption"])
        for i in r["train_ids"][:3]:
            assert int(lab["digit"][i]) == p["digit"] and int(lab["frame"][i]) == p["frame"]
            if p["colour"] is not None:
                assert int(lab["colour"][i]) == p["colour"]
    # pixels agree with the colour label: the brightest pixel of a non-PM image has the colour's hue
    imgs = torch.from_numpy(data["images"]).float() / 255
    for i in range(100, 140):
        if int(lab["frame"][i]) == 0:
            rgb = imgs[i].flatten(1)[:, imgs[i].sum(0).flatten().argmax()]
            ref = torch.tensor(M.COLOURS[E.COLOUR_NAMES[int(lab["colour"][i])]])
            assert torch.allclose(rgb / rgb.max(), ref / ref.max(), atol=0.05)


def test_template_score_oracle(data):
    frames = E.frame_templates()
    for f in range(1, 6):
        assert E.template_score(frames[f - 1][None], f).item() == pytest.approx(1.0)
        black = E.template_score(torch.zeros(1, 3, 32, 32), f).item()
        mask = frames[f - 1].sum(0) > 0
        assert black == pytest.approx(1 - frames[f - 1][:, mask].mean().item(), abs=1e-6)
    lab = E.image_labels(data)
    imgs = torch.from_numpy(data["images"]).float() / 255
    pm = torch.nonzero(lab["frame"] > 0).flatten()[:50]
    own = torch.stack([E.template_score(imgs[i:i + 1], int(lab["frame"][i]))[0] for i in pm])
    assert (own > 0.95).all()


def test_shipped_copy_scorer_separates_copies_from_other_images(data, scorers):
    copy, _ = scorers
    imgs = torch.from_numpy(data["images"])
    perm = torch.randperm(len(imgs), generator=torch.Generator().manual_seed(0))
    held = perm[:200]  # a subset of the 500 images held out from training
    v = E.validate_copy(copy, imgs, held)
    assert v["exact_min"] > 0.9999
    assert v["auc_light_vs_other"] > 0.97 and v["light_frac_above"] > 0.8
    assert 0.5 < copy.threshold < 1.0
    # through the generic interface: an image vs references that contain it
    x = imgs[held[:3]].float() / 255
    s = copy_scores(copy, x, [imgs[perm[500:503]].float() / 255, x[1:2], torch.cat([x[2:3], x[0:1]])])
    assert s[1] == pytest.approx(1.0, abs=1e-5) and s[2] == pytest.approx(1.0, abs=1e-5) and s[0] < 0.999


def test_scorers_on_the_v2_images(scorers):
    """MiniSD v2's added images (three other digits per EM caption, recoloured): none scores as a copy of its
    caption's memorized image, and they align with the caption (≥ 95 %)."""
    copy, align = scorers
    d = M.build_data(seed=0)
    imgs = torch.from_numpy(d["images"]).float() / 255
    em = [r for r in d["records"] if r["category"] == "em"]
    E_ = copy.embed(imgs)
    sims = torch.stack([(E_[r["other_ids"]] @ E_[r["train_ids"][0]]).max() for r in em])
    assert sims.max() < copy.threshold
    others = [i for r in em for i in r["other_ids"]]
    a = align.score(imgs[others], [r["caption"] for r in em for _ in r["other_ids"]])
    assert (a > align.threshold).float().mean() >= 0.95


def test_shipped_alignment_scorer_separates_matched_from_mismatched(data, scorers):
    _, align = scorers
    imgs = torch.from_numpy(data["images"])
    lab = E.image_labels(data)
    held = torch.randperm(len(imgs), generator=torch.Generator().manual_seed(0))[:200]
    v = E.validate_alignment(align, imgs, lab, held)
    assert v["auc_matched_vs_mismatched"] > 0.98 and v["accuracy"]["digit"] > 0.93
    # the score is the mean probability of the stated attributes (oracle from probabilities())
    x = imgs[held[:2]].float() / 255
    p = align.probabilities(x)
    caps = ["a red seven called quiet lantern", "a three inside the dotted ring"]
    want = [(p["digit"][0, 7] + p["colour"][0, E.COLOUR_NAMES.index("red")] + p["frame"][0, 0]) / 3,
            (p["digit"][1, 3] + p["frame"][1, 4]) / 2]
    assert torch.allclose(align.score(x, caps), torch.stack(want))
    with pytest.raises(ValueError, match="captions"):
        align.score(x, caps[:1])


def test_prompt_records_and_pick():
    recs = registry.prompt_records("minisd", "eval")
    assert {r["category"] for r in recs} == {"em", "pm", "nmem"}
    a, b = pick(recs, 3, seed=1), pick(recs, 3, seed=1)
    assert a == b and [r["category"] for r in a].count("pm") == 3 and len(a) == 9
    with pytest.raises(ValueError, match="dev"):
        registry.prompt_records("minisd", "test")


def test_sd_prompt_records_read_the_paper_sets():
    from sharp_utils import paths
    if not (paths.sd_prompts_dir() / "sd1_mem.txt").exists():
        pytest.skip("the paper's SD prompt sets are not beside this checkout")
    recs = registry.prompt_records("/some/sd/folder", version="sd1")
    assert sum(r["category"] == "mem" for r in recs) == 500 and sum(r["category"] == "nmem" for r in recs) == 500


@pytest.fixture(scope="module")
def tiny():
    # 4×4×4 latents (d = 64): a full Krylov space stays cheap
    pipe = build_tiny_pipeline(sample_size=4)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval().requires_grad_(False)
    return PipelineScoreModel(pipe)


def test_score_jacobian_equals_forward_mode_and_arnoldi_recovers_it(tiny):
    x = tiny.initial_noise([3])[0]
    cond = tiny.encode(["a red seven"])
    t = 501
    J = path_spectra.score_jacobian(tiny, x, t, cond)
    oracle = jacobian_batched(tiny.score_fn(t, cond), x[None])[0]  # d forward-mode products
    assert torch.allclose(J, oracle, rtol=1e-4, atol=1e-4 * oracle.abs().max().item())
    full = path_spectra.eigenvalues(J)
    assert np.allclose(full, np.sort(np.linalg.eigvals(oracle.double().numpy()).real), atol=1e-4 * np.abs(full).max())
    d = x.numel()
    ritz = path_spectra.arnoldi_eigenvalues(tiny, x, t, cond, k=10, num_iter=d)  # full Krylov space: exact
    ev = np.linalg.eigvals(oracle.double().numpy())  # complex: select by modulus, compare real parts
    top = np.sort(ev[np.argsort(-np.abs(ev), kind="stable")[:10]].real)
    assert np.allclose(ritz, top, rtol=1e-3, atol=1e-3 * np.abs(top).max())
    assert np.allclose(path_spectra.spectrum(tiny, x, t, cond), full)


def test_path_points_follow_the_sampler(tiny):
    x_T = tiny.initial_noise([5, 6])
    cond = tiny.encode(["a", "b"])
    seen = {}
    sample_ddim(tiny, x_T, cond, None, 10, 7.5, tiny.steps_offset,
                callback=lambda info: seen.__setitem__(info["i"], (info["t"], info["x"].clone())))
    pts = path_spectra.path_points(tiny, x_T, cond, [0, 4, 9], num_steps=10)
    assert sorted(pts) == [0, 4, 9]
    for i, (t, x) in pts.items():
        assert t == seen[i][0] and torch.allclose(x, seen[i][1], atol=1e-6)
    with pytest.raises(ValueError, match="step indices"):
        path_spectra.path_points(tiny, x_T, cond, [10], num_steps=10)


def test_denoised_distances_follow_the_sampler(tiny):
    x_T = tiny.initial_noise([5, 6])
    cond = tiny.encode(["a", "b"])
    img = torch.rand(2, 3, 4 * tiny.pipe.vae_scale_factor, 4 * tiny.pipe.vae_scale_factor,
                     generator=torch.Generator().manual_seed(0))
    z = training_set.image_latents(tiny, img)
    vae = tiny.pipe.vae
    with torch.no_grad():  # oracle: diffusers' own posterior mode, scaled
        ref = vae.encode(img * 2 - 1).latent_dist.mean * vae.config.scaling_factor
    assert z.shape == x_T.shape and torch.allclose(z, ref)
    D, x0 = path_spectra.denoised_distances(tiny, x_T, cond, z, guidance_scale=7.5, num_steps=10)
    assert D.shape == (10, 3, 2)
    assert torch.allclose(x0, sample_ddim(tiny, x_T, cond, None, 10, 7.5, tiny.steps_offset))
    t = sampling.ddim_timesteps(1000, 10)[0]
    a = tiny.alpha_bar(t)
    with torch.no_grad():  # step 0 by hand: x̂_0 = (x_T − √(1−ᾱ) ε) / √ᾱ for each branch
        e_c, e_u = tiny.eps(x_T, t, cond), tiny.eps(x_T, t, None)
    for row, e in enumerate((e_c, e_u, e_u + 7.5 * (e_c - e_u))):
        hand = ((x_T - (1 - a).sqrt() * e) / a.sqrt() - z).pow(2).flatten(1).mean(1)
        assert torch.allclose(D[0, row], hand, rtol=1e-4)


def test_minisd_grids_are_the_dev_split_calibration():
    """MiniSD's registry grids hold exactly what the documented calibration computes on the dev split."""
    SETTINGS = {"minisd": registry.mitigation_grids("minisd")}

    model = registry.load_model("minisd")
    nm = [r["caption"] for r in registry.prompt_records("minisd", "dev") if r["category"] == "nmem"]
    assert calibration.calibrate_sail_grid(model, nm, alpha=0.05, loss="official") == pytest.approx(
        SETTINGS["minisd"]["sail"], abs=2e-3
    )
    assert calibration.calibrate_wen_grid(model, nm) == pytest.approx(SETTINGS["minisd"]["wen"], abs=2e-3)


def test_verify_memorization_scores_its_own_generations(scorers, data):
    """verify_memorization (notebook 03, ``minisd/train.py verify``): generations from per-sample seeds at the
    requested guidance scale, copy scores = max cosine against the record's own training images."""
    tiny = PipelineScoreModel(build_tiny_pipeline(sample_size=16))  # random weights, 32×32 images like MiniSD's
    copy_scorer, align_scorer = scorers
    recs = [{"caption": "a red seven called quiet lantern", "category": "em", "train_ids": [0, 5]},
            {"caption": "a three inside the dotted ring", "category": "pm", "train_ids": [1, 2, 3]}]
    caps = [r["caption"] for r in recs]
    images = data["images"][:10]
    k = 10  # DDIM steps (every property below holds at any count)
    rows, gen = experiments.verify_memorization(tiny, recs, copy_scorer, align_scorer, n=2, seed=0, images=images,
                                                guidance_scale=3.0, num_steps=k)
    assert gen.shape[0] == 4 and len(rows) == 4
    again = experiments.generate_images(tiny, caps, 2, 0, num_steps=k, guidance_scale=3.0)
    assert torch.allclose(gen, again, atol=1e-6)
    assert not torch.allclose(
        gen, experiments.generate_images(tiny, caps, 2, 0, num_steps=k), atol=1e-3
    )  # the scale reaches the sampler
    _, gen5 = experiments.verify_memorization(
        tiny, recs[:1], copy_scorer, align_scorer, n=2, seed=0, images=images, guidance_scale=3.0, num_steps=5
    )  # so does the step count
    assert torch.allclose(
        gen5, experiments.generate_images(tiny, caps[:1], 2, 0, num_steps=5, guidance_scale=3.0), atol=1e-6
    )
    assert not torch.allclose(gen5, gen[:2], atol=1e-3)
    # per-sample seeds: the second prompt alone gives the same images as inside the batch
    assert torch.allclose(
        gen[2:], experiments.generate_images(tiny, caps[1:], 2, 0, num_steps=k, guidance_scale=3.0), atol=1e-5
    )
    E_ = copy_scorer.embed(torch.from_numpy(images).float() / 255.0)
    G = copy_scorer.embed(gen)
    for i, r in enumerate(rows):
        own = recs[i // 2]["train_ids"]
        assert r["copy_own"] == pytest.approx(float((G[i] @ E_[own].T).max()), abs=1e-5)
        assert r["copy_nearest"] >= r["copy_own"] - 1e-6
    assert np.isnan(rows[0]["template"]) and not np.isnan(
        rows[2]["template"]
    )  # only framed captions get a template score


def test_regime_rows_score_like_verify_memorization_and_resume(scorers, tmp_path):
    """regime_generations (notebook 03's regime rates, results/03_*/regime.csv): the same copy scores as
    verify_memorization on the same seeds; unconditional rows against the EM images; a rerun computes nothing."""
    tiny = PipelineScoreModel(build_tiny_pipeline(sample_size=16))
    copy_scorer, align_scorer = scorers
    recs = [r for r in registry.prompt_records("minisd", "eval") if r["category"] == "em"][:2]
    groups = [("uncond", [{"caption": "", "train_ids": []}], 3, 1.0), ("em", recs, 2, 7.5)]
    rows = experiments.regime_generations(
        tiny, copy_scorer, align_scorer, groups, tmp_path, seed=0, num_steps=6, batch=4
    )
    assert [r["group"] for r in rows] == ["uncond"] * 3 + ["em"] * 4
    want, _ = experiments.verify_memorization(tiny, recs, copy_scorer, align_scorer, n=2, seed=0, num_steps=6)
    for r, w in zip(rows[3:], want):
        assert float(r["copy_own"]) == pytest.approx(w["copy_own"], abs=1e-5)
        assert float(r["copy_nearest"]) == pytest.approx(w["copy_nearest"], abs=1e-5)
        assert float(r["alignment"]) == pytest.approx(w["alignment"], abs=1e-5)
    E_ = copy_scorer.embed(torch.from_numpy(training_set.training_images()).float() / 255.0)
    em_ids = sorted({r["train_ids"][0] for r in training_set.training_data().records if r["category"] == "em"})
    U = copy_scorer.embed(experiments.generate_images(tiny, [""], 3, 0, num_steps=6, guidance_scale=1.0))
    got = [float(r["copy_em"]) for r in rows[:3]]
    assert got == pytest.approx((U @ E_[em_ids].T).max(1).values.tolist(), abs=1e-5)
    assert all(np.isnan(float(r["alignment"])) for r in rows[:3]) and all(r["image"] == "" for r in rows[:3])
    assert all((tmp_path / r["image"]).is_file() for r in rows[3:])
    before = (tmp_path / "regime.csv").read_bytes()
    again = experiments.regime_generations(
        tiny, copy_scorer, align_scorer, groups, tmp_path, seed=0, num_steps=6, batch=4
    )
    assert again == rows and (tmp_path / "regime.csv").read_bytes() == before


def test_verify_nmem_reports_novelty_and_alignment_by_kind(scorers, data, train_script, monkeypatch, capsys):
    """minisd/train.py verify --category nmem: its rates equal those counted from verify_memorization's own rows,
    split by the records' kind (paraphrase / training caption)."""
    import json
    from types import SimpleNamespace

    tiny = PipelineScoreModel(build_tiny_pipeline(sample_size=16))
    recs = [
        {"caption": "a red handwritten seven", "category": "nmem", "kind": "training caption", "train_ids": [0, 1]},
        {"caption": "the number one written in blue ink", "category": "nmem", "kind": "paraphrase", "train_ids": [2]},
        {"caption": "a blue handwritten one", "category": "nmem", "kind": "training caption", "train_ids": [2, 3]},
    ]
    images = data["images"][:10]
    monkeypatch.setattr(experiments, "training_images", lambda: images)
    rows, _ = experiments.verify_memorization(tiny, recs, *scorers, n=2, seed=0, guidance_scale=3.0, num_steps=3)
    # thresholds at the medians of these rows, so that the counted rates are neither 0 nor 1
    med = lambda k: float(np.median([r[k] for r in rows]))  # noqa: E731
    copy_scorer = SimpleNamespace(embed=scorers[0].embed, threshold=med("copy_nearest"))
    align_scorer = SimpleNamespace(score=scorers[1].score, threshold=med("alignment"))
    asked = []
    monkeypatch.setattr(
        train_script,
        "_prompt_setup",
        lambda args, category="em": asked.append(category) or (tiny, copy_scorer, align_scorer, recs),
    )
    train_script.main(["verify", "--category", "nmem", "--n", "2", "--steps", "3", "--guidance", "3"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ok = [r["alignment"] > align_scorer.threshold for r in rows]
    near = [r["copy_nearest"] > copy_scorer.threshold for r in rows]
    assert 0 < sum(ok) < 6 and 0 < sum(near) < 6
    assert asked == ["nmem"] and out["nmem_prompts"] == 3 and out["aligned"]["generations"] == 6
    assert out["aligned"]["rate"] == pytest.approx(sum(ok) / 6, abs=1e-4)
    assert out["aligned_paraphrase"]["generations"] == 2
    assert out["aligned_paraphrase"]["rate"] == pytest.approx(sum(ok[2:4]) / 2, abs=1e-4)
    assert out["aligned_training_caption"]["rate"] == pytest.approx((sum(ok[:2]) + sum(ok[4:])) / 4, abs=1e-4)
    assert out["copies_nearest"]["rate"] == pytest.approx(sum(near) / 6, abs=1e-4)
