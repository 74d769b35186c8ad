"""MiniSD's data with ground truth: categories, duplication, templates, the fixed dev/eval split, caption encoding."""
import json
from collections import Counter

import numpy as np
import pytest

from sharp_utils import minisd as M
from sharp_utils import paths


@pytest.fixture(scope="module")
def data():
    return M.build_data(seed=0)  # v2


@pytest.fixture(scope="module")
def coupled():
    return M.build_data(seed=0, design="coupled")


def test_categories_counts_and_split(data):
    recs = data["records"]
    cats = Counter(r["category"] for r in recs)
    assert cats["em"] + cats["pm"] >= 100 and cats["nmem"] >= 200
    for cat in cats:
        split = Counter(r["split"] for r in recs if r["category"] == cat)
        assert abs(split["dev"] - split["eval"]) <= 1
    assert len({r["caption"] for r in recs}) == len(recs)  # no prompt in two categories or splits


def test_em_images_are_duplicated_under_a_unique_caption(coupled):
    ti, tc, caps = coupled["train_image"], coupled["train_caption"], coupled["captions"]
    for r in (r for r in coupled["records"] if r["category"] == "em"):
        c = caps.index(r["caption"])
        assert set(ti[tc == c].tolist()) == set(r["train_ids"]) and len(r["train_ids"]) == 1
        assert (tc == c).sum() == 40
        # the image appears under no other caption
        assert set(tc[ti == r["train_ids"][0]].tolist()) == {c}


def test_v2_em_captions_are_dominant_modes(data, coupled):
    """v2: each EM caption pairs its memorized image (40 copies) with three other digits of the same digit class,
    recoloured in the caption's colour (10 copies each): the memorized image holds 40/70 of the caption's pairs."""
    ti, tc, caps, imgs = data["train_image"], data["train_caption"], data["captions"], data["images"].astype(np.float32)
    assert len(imgs) == 5180 and np.array_equal(data["images"][:5000], coupled["images"])
    others = []
    for r in (r for r in data["records"] if r["category"] == "em"):
        c = caps.index(r["caption"])
        counts = Counter(ti[tc == c].tolist())
        assert counts == {r["train_ids"][0]: 40, **{i: 10 for i in r["other_ids"]}}
        assert r["memorized_share"] == pytest.approx(40 / 70, abs=1e-4)
        assert set(tc[ti == r["train_ids"][0]].tolist()) == {c}
        colour = np.array(M.COLOURS[next(k for k in M.COLOURS if f" {k} " in f" {r['caption']} ")])
        for i in r["other_ids"]:
            assert set(tc[ti == i].tolist()) == {c}
            rgb = imgs[i].reshape(3, -1)[:, imgs[i].max(0).reshape(-1).argmax()]  # the brightest pixel's colour
            assert np.allclose(rgb / rgb.max(), colour / colour.max(), atol=0.02)
        others += r["other_ids"]
    assert len(set(others)) == len(others) == 180
    # both designs share every prompt record (v2 adds the EM records' other images)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("other_ids", "memorized_share")}  # noqa: E731
    assert [strip(r) for r in data["records"]] == coupled["records"]


def test_v2_unconditional_pool_holds_each_memorized_image_once(data):
    """App. C's principle: every non-memorized digit in all 8 colours plus every PM / EM image, each once; the
    memorized images are 60 of 36,780."""
    pool = data["uncond_images"]
    assert len(pool) == 4540 * len(M.COLOURS) + 400 + 60
    count = Counter(x.tobytes() for x in pool)
    assert max(count.values()) == 1  # no image more frequent than another
    em = [r["train_ids"][0] for r in data["records"] if r["category"] == "em"]
    assert all(count[data["images"][i].tobytes()] == 1 for i in em)
    assert all(count[x.tobytes()] == 1 for x in data["images"])  # every captioned image, v2's added ones included


def test_training_rows_drawn_in_their_proportions(train_script):
    """draw_rows: examples ∝ their weights, CFG drops with probability p (here App. C's 0.2), pool indices uniform:
    each within 4.5 binomial standard errors over 20,000 rows, and a chi-square test on the pool's 10 bins."""
    import torch

    g = torch.Generator().manual_seed(0)
    w = torch.tensor([1.0, 2.0, 7.0])
    j, drop, k = train_script.draw_rows(w, 20_000, 0.2, 10, g)
    n = 20_000
    for i, p in enumerate((w / w.sum()).tolist()):
        assert abs((j == i).float().mean().item() - p) < 4.5 * (p * (1 - p) / n) ** 0.5
    assert abs(drop.float().mean().item() - 0.2) < 4.5 * (0.2 * 0.8 / n) ** 0.5
    obs = torch.bincount(k[drop], minlength=10).double()
    chi2 = ((obs - obs.mean()) ** 2 / obs.mean()).sum().item()
    assert chi2 < 27.9  # 9 dof, p = 0.001
    assert train_script.draw_rows(w, 4, 0.2, None, g)[2] is None


def test_em_captions_are_the_em_records(data):
    # the training script's --em-weight finds EM captions from the training lists alone: exactly the EM records
    mask = M.em_captions(data["train_image"], data["train_caption"], len(data["captions"]))
    found = {data["captions"][c] for c in np.flatnonzero(mask.numpy())}
    assert found == {r["caption"] for r in data["records"] if r["category"] == "em"}


def test_pm_prompts_share_a_template_with_varying_content(data):
    imgs = data["images"].astype(np.float32) / 255
    for f in range(len(M.FRAMES)):
        frame = M._frame(f)
        mask = frame.max(0) > 0
        ids = [
            i
            for r in data["records"]
            if r["category"] == "pm" and r["caption"].endswith(M.FRAMES[f])
            for i in r["train_ids"]
        ]
        assert len(ids) == 80
        # every image carries the frame exactly where the template has it (digits are drawn with max())
        assert all((imgs[i][:, mask] >= frame[:, mask] - 1e-2).all() for i in ids)
        # and the content varies: the images differ from each other
        assert np.std(imgs[ids], axis=0).mean() > 0.05


def test_prompt_files_are_the_fixed_split(data):
    for split in ("dev", "eval"):
        path = paths.PROMPTS / f"minisd_{split}.jsonl"
        shipped = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert shipped == [r for r in data["records"] if r["split"] == split]


def test_captions_fit_the_token_limit(data):
    tok, _ = M.load_text_encoder()
    lengths = [len(tok(r["caption"]).input_ids) for r in data["records"]]
    assert max(lengths) <= M.MAX_TOKENS


def test_checkpoint_assembles_into_a_diffusers_pipeline_that_load_pipeline_reads(tmp_path, data):
    """A (random-weight) MiniSD checkpoint → pipeline_dir → load_pipeline: the text encoder path matches training's."""
    import torch

    from sharp_utils.checkpoints import save_state
    from sharp_utils.pipeline import load_pipeline

    torch.manual_seed(0)
    unet, vae = M.build_unet(), M.build_vae()
    vae.register_to_config(scaling_factor=0.7)
    ck = tmp_path / "ck"
    save_state(ck, "unet", unet.state_dict(), config=dict(unet.config))
    save_state(ck, "vae", vae.state_dict(), config=dict(vae.config))
    folder = M.pipeline_dir(ck, tmp_path / "pipe")
    assert M.pipeline_dir(ck, tmp_path / "pipe") == folder  # cached by the manifest's hash
    model = load_pipeline(folder, device="cpu")
    assert model.latent_shape == (4, 8, 8) and model.num_cross_attention_layers == 11
    assert model.max_tokens == M.MAX_TOKENS and model.pipe.vae.config.scaling_factor == 0.7
    caps = [r["caption"] for r in data["records"][:3]] + [""]
    tok, enc = M.load_text_encoder()
    torch.testing.assert_close(model.encode(caps).float(), M.encode_captions(tok, enc, caps), rtol=1e-5, atol=1e-5)
    x = model.initial_noise([0, 1])
    torch.testing.assert_close(
        model.eps(x, 981, None),
        unet(x, 981, encoder_hidden_states=model.uncond_embedding.expand(2, -1, -1)).sample,
        rtol=1e-5,
        atol=1e-5,
    )
    assert model.decode(x).shape == (2, 3, 32, 32)


def test_shipped_minisd_checkpoint_matches_its_manifest_and_loads():
    import torch

    from sharp_utils.checkpoints import load_state, read_manifest
    from sharp_utils.pipeline import load_pipeline

    for ck in M.CHECKPOINTS.values():  # v2 and the first, coupled MiniSD
        man = read_manifest(ck)
        assert set(man["files"]) == {"unet.safetensors", "vae.safetensors"}
        assert all(f["bytes"] <= 40 * 2**20 for f in man["files"].values())
        for name in ("unet", "vae"):
            load_state(ck, name)  # raises on a hash mismatch
            assert man["recipe"][name]["steps"] > 0 and man["recipe"][name]["seconds"] > 0
        model = load_pipeline(M.pipeline_dir(ck), device="cpu")
        x = model.initial_noise([0])
        assert torch.isfinite(model.eps(x, 981, model.encode(["a red handwritten seven"]))).all()


def test_training_learning_rate_schedule_warmup_then_cosine(train_script):
    """sharp_utils/minisd/train.py: linear warm-up, and with --anneal lr·½(1 + cos πf) at elapsed share f of the
    budget."""
    import math

    import torch

    T = train_script
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)

    def lr(step, frac):
        T._warmup_lr(opt, step, 3e-4, 100, frac)
        return opt.param_groups[0]["lr"]

    assert lr(0, None) == pytest.approx(3e-6) and lr(49, None) == pytest.approx(1.5e-4) and lr(5000, None) == 3e-4
    for f in (0.0, 0.25, 0.5, 0.9, 1.0, 1.3):
        assert lr(5000, f) == pytest.approx(3e-4 * 0.5 * (1 + math.cos(math.pi * min(f, 1.0))), abs=1e-12)
    assert lr(49, 0.5) == pytest.approx(0.75e-4)


def test_training_example_weights_count_em_and_sibling_examples(train_script):
    """sharp_utils/minisd/train.py --em-weight / --sibling-weight: the weight of every example, counted by hand."""
    import torch

    T = train_script
    caps = ["a red seven called quiet lantern", "a red seven called frozen river", "a blue one called amber pebble",
            "a red handwritten seven"]
    # captions 0-2 are EM (one image each, repeated); caption 3 is shared by three different images
    ti = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, 4, 5])
    tc = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, 3, 3])
    w = T.example_weights(ti, tc, caps, em_weight=6.0, sibling_weight=3.0)
    assert w.tolist() == [18.0] * 5 + [6.0] * 2 + [1.0] * 3
    assert T.example_weights(ti, tc, caps).tolist() == [1.0] * 10


def test_unet_config_widths():
    """minisd.unet_config: the shipped widths (48-96-96) give UNET_CONFIG; other ones build with GroupNorm groups
    dividing them."""
    import torch

    assert M.unet_config() == M.UNET_CONFIG and M.unet_config([48, 96, 96]) == M.UNET_CONFIG
    assert M.UNET_CONFIG["norm_num_groups"] == 16
    cfg = M.unet_config((32, 64, 64))
    assert cfg["block_out_channels"] == (32, 64, 64) and cfg["norm_num_groups"] == 32
    unet = M.build_unet(cfg)
    n = sum(p.numel() for p in unet.parameters())
    assert 2.0 < sum(p.numel() for p in M.build_unet().parameters()) / n < 2.3  # ≈ 5.40 M vs 2.55 M
    x = torch.randn(2, 4, 8, 8)
    assert unet(x, 500, encoder_hidden_states=torch.randn(2, 16, 384)).sample.shape == x.shape
    with pytest.raises(ValueError, match="multiples of 8"):
        M.unet_config((44, 88, 88))


def test_train_widths_mid_run_saves_and_resume(tmp_path, train_script):
    """minisd/train.py train --widths / --vae-from / --resume / --save-every on a tiny synthetic prep file: the new
    UNet has the asked widths, mid-run saves load with their step counts, a resume adds its steps to the total and
    keeps the VAE bit for bit, and mismatched widths stop with a one-line error."""
    import torch
    from safetensors.torch import save_file

    from sharp_utils.checkpoints import load_state, read_manifest

    T = train_script
    g = torch.Generator().manual_seed(0)
    caps = ["a red seven called quiet lantern", "a blue one called amber pebble", "a red handwritten seven"]
    prep = tmp_path / "prep.safetensors"
    save_file(
        {
            "images": torch.randint(0, 256, (6, 3, 32, 32), generator=g, dtype=torch.uint8),
            "train_image": torch.tensor([0, 0, 1, 1, 2, 3, 4, 5]),
            "train_caption": torch.tensor([0, 0, 1, 1, 2, 2, 2, 2]),
            "emb": torch.randn(4, 16, 384, generator=g),
        },
        str(prep),
        metadata={"captions": json.dumps(caps), "seed": "0"},
    )
    common = ["--prep", str(prep), "--device", "cpu", "--unet-batch", "4", "--vae-batch", "4"]
    a, b = tmp_path / "a", tmp_path / "b"
    T.main(["train", *common, "--out", str(a), "--vae-seconds", "0.5", "--unet-seconds", "0.5",
           "--widths", "32", "64", "64"])
    assert read_manifest(a)["config"]["unet"]["block_out_channels"] == [32, 64, 64]

    seen = []
    lat = torch.randn(6, 4, 8, 8)
    _, rec = T.train_unet(
        lat,
        torch.randn(4, 16, 384),
        torch.tensor([0, 1, 2]),
        torch.tensor([0, 1, 2]),
        "cpu",
        1.5,
        batch=2,
        save_every=0.3,
        callback=lambda ema, r: seen.append((r["steps"], r["saved_mid_run"])),
    )
    assert len(seen) >= 2 and all(s[1] for s in seen) and [s[0] for s in seen] == sorted({s[0] for s in seen})
    assert 0 < seen[-1][0] <= rec["steps"] and "saved_mid_run" not in rec

    T.main(["train", *common, "--out", str(b), "--resume", str(a), "--unet-seconds", "1", "--save-every", "0.2"])
    ra, rb = read_manifest(a)["recipe"]["unet"], read_manifest(b)["recipe"]["unet"]
    assert rb["total_steps"] == ra["steps"] + rb["steps"] and rb["resumed_from"]["steps"] == ra["steps"]
    assert "saved_mid_run" not in rb and "quick_check" in rb
    assert read_manifest(b)["config"]["unet"]["block_out_channels"] == [32, 64, 64]
    va, vb = load_state(a, "vae")[0], load_state(b, "vae")[0]
    assert all(torch.equal(va[k], vb[k]) for k in va)
    assert not (tmp_path / ".b.saving").exists()

    with pytest.raises(SystemExit, match="differs from"):
        T.main(["train", *common, "--out", str(tmp_path / "c"), "--resume", str(a), "--widths", "48", "96", "96"])
    T.main(["train", *common, "--out", str(tmp_path / "d"), "--vae-from", str(a), "--unet-seconds", "0.3"])
    rd = read_manifest(tmp_path / "d")
    assert rd["config"]["unet"]["block_out_channels"] == [48, 96, 96] and "resumed_from" not in rd["recipe"]["unet"]
    assert all(torch.equal(va[k], v) for k, v in load_state(tmp_path / "d", "vae")[0].items())


def test_memorized_shares_of_the_training_rows():
    """memorized_shares against a count by hand: v2 draws EM captions em_weight × (2, from its manifest) and its
    unconditional rows from the 36,780-image pool; the first MiniSD's dropped rows are its own examples."""
    from sharp_utils.minisd import experiments

    v2, co = experiments.memorized_shares("minisd"), experiments.memorized_shares("minisd-coupled")
    w = v2["em_weight"]
    assert v2["conditional"] == pytest.approx(60 * 40 * w / (60 * 70 * w + 400 + 4540))
    assert v2["unconditional"] == pytest.approx(60 / 36_780)
    w = co["em_weight"]
    assert co["conditional"] == co["unconditional"] == pytest.approx(60 * 40 * w / (60 * 40 * w + 400 + 4540))
