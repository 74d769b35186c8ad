"""Figure 6 machinery: scorers vs hand-computed oracles, `sharp mitigate` end to end, resume, plot-tradeoff."""
import csv
import json

import pytest
import torch
import torch.nn.functional as F

from sharp_utils import cli, tradeoff as R, image_scorers as S
from sharp_utils.pipeline import load_pipeline
from sharp_utils.tiny_sd import save_tiny_clip, save_tiny_pipeline


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def model(tiny_dir):
    return load_pipeline(tiny_dir, device="cpu")


def images(seed, n=3, size=16):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_pixel_copy_score_is_max_cosine_over_references():
    sc = S.PixelCopyScorer(size=8)
    a, b = images(0), images(1)
    got = S.copy_scores(sc, a, [torch.stack([b[0], a[0]]), b[1:2], None])
    assert got[0] == pytest.approx(1.0, abs=1e-6)  # an exact copy among the references
    want = float(F.cosine_similarity(sc.embed(a[1:2]), sc.embed(b[1:2])))
    assert got[1] == pytest.approx(want, abs=1e-6) and got[1] < 0.9
    assert got[2] != got[2]  # no references: NaN
    # brightness/contrast changes leave a centred, normalised thumbnail unchanged
    assert float(S.copy_scores(sc, 0.5 * a[:1] + 0.2, [a[:1]])[0]) == pytest.approx(1.0, abs=1e-5)


def test_sscd_scorer_matches_the_torchscript_module(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(32, 16)).eval()
    path = tmp_path / "sscd.torchscript.pt"
    torch.jit.script(net).save(str(path))
    sc = S.SSCDCopyScorer(path, size=64)
    x = images(3, n=2, size=32)
    mean, std = torch.tensor(sc.MEAN)[:, None, None], torch.tensor(sc.STD)[:, None, None]
    pre = (F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False) - mean) / std
    with torch.no_grad():
        want = F.normalize(net(pre), dim=1)
    torch.testing.assert_close(sc.embed(x), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(S.ScorerError, match="no SSCD TorchScript file"):
        S.SSCDCopyScorer(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(S.ScorerError, match="TorchScript"):
        S.SSCDCopyScorer(tmp_path / "junk.pt")


def test_clip_scorer_is_cosine_of_clip_embeddings(tmp_path):
    from transformers import CLIPModel, CLIPProcessor

    folder = save_tiny_clip(tmp_path / "clip")
    sc = S.CLIPAlignmentScorer(folder)
    x = images(4, n=2, size=32)
    prompts = ["the cat", "zebra"]
    got = sc.score(x, prompts)
    m, proc = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    arr = [(im.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy() for im in x]
    inp = proc(text=prompts, images=arr, return_tensors="pt", padding="max_length", truncation=True)
    with torch.no_grad():
        i = m.get_image_features(pixel_values=inp["pixel_values"])
        t = m.get_text_features(input_ids=inp["input_ids"], attention_mask=inp["attention_mask"])
    i, t = getattr(i, "pooler_output", i), getattr(t, "pooler_output", t)
    torch.testing.assert_close(got, F.cosine_similarity(i, t), rtol=1e-4, atol=1e-5)
    assert got.shape == (2,) and (got.abs() <= 1).all()
    with pytest.raises(S.ScorerError, match="cannot load a CLIP model"):
        S.CLIPAlignmentScorer(tmp_path / "nothing-here")


@pytest.mark.parametrize("method,setting", [("none", 0), ("rta", 2), ("rna", 2), ("wen", 0.5), ("ren", 1.25),
                                            ("sail", 1e6)])
def test_each_method_is_deterministic_for_a_seed(model, method, setting):
    kw = {"loss": "official", "alpha": 0.05, "budget": 4, "max_steps": 2, "num_inference_steps": 5}
    # short sampling keeps the test fast
    a = R.mitigate_prompt(model, "the cat and a dog", method, setting, 2, seed=3, sail_kw=kw)
    b = R.mitigate_prompt(model, "the cat and a dog", method, setting, 2, seed=3, sail_kw=kw)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    assert a[1] == b[1]
    if method in ("rta", "rna"):
        assert all(len(u.split()) == 5 + 2 for u in a[1]) and a[1][0] != a[1][1]


@pytest.mark.parametrize("method,setting", [("none", 0), ("ren", 1.25), ("wen", 0.5)])
def test_batching_prompts_changes_no_image(model, tmp_path, method, setting):
    """Three prompts sampled as one batch give each prompt's one-at-a-time images (per-sample seeds)."""
    prompts = ["the cat and a dog", "a red house", "two birds on a long wire today"]
    rows = {b: list(R.run_mitigation(model, prompts, [(method, setting)], 2, tmp_path / str(b), seed=1, log=print,
                                     batch=b)) for b in (0, 6)}
    assert [(r["prompt_index"], r["generation"]) for r in rows[0]] == [(r["prompt_index"], r["generation"])
                                                                        for r in rows[6]]
    for a, b in zip(rows[0], rows[6]):
        torch.testing.assert_close(S.load_image(tmp_path / "0" / a["image"]), S.load_image(tmp_path / "6" / b["image"]),
                                   rtol=0, atol=2 / 255)  # PNG rounding of floats that differ in the last bits
    lat = R.mitigate_prompt(model, prompts[1], method, setting, 2, seed=1)[0]
    preps = [R.prepare_prompt(model, p, method, setting, 2, seed=1) for p in prompts]
    torch.testing.assert_close(R._sample(model, preps)[2:4], lat, rtol=1e-4, atol=1e-5)


def test_mitigate_cli_end_to_end_resume_and_plot(tiny_dir, tmp_path, capsys):
    refs = tmp_path / "train"
    S.save_image(images(9, n=1)[0], refs / "a.png")
    S.save_image(images(10, n=1)[0], refs / "b.png")
    pf = tmp_path / "mem.jsonl"
    pf.write_text("\n".join(json.dumps(r) for r in [
        {"caption": "the cat", "images": ["train/a.png", "train/b.png"]},
        {"caption": "zebra on a road", "images": ["train/b.png"]}]) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    base = ["mitigate", "--model", str(tiny_dir), "--prompts", str(pf), "-n", "2", "--out", str(out),
            "--copy-scorer", "pixel", "--num-inference-steps", "4", "--quiet"]
    assert cli.main(base + ["--method", "rna", "--setting", "1,4", "--batch-size", "4"]) == 0  # both prompts at once
    assert cli.main(base + ["--method", "sail", "--setting", "1e6", "--sail-max-steps", "2", "--budget", "2"]) == 0
    rows = list(csv.DictReader(open(out / "results.csv", encoding="utf-8")))
    # 2 prompts × (none + rna 1 + rna 4 + sail) × 2 generations; 'none' written once
    assert len(rows) == 2 * 4 * 2
    assert {r["method"] for r in rows} == {"none", "rna", "sail"}
    for r in rows:
        assert (out / r["image"]).is_file()
        assert -1.0 - 1e-6 <= float(r["copy_score"]) <= 1.0 + 1e-6 and r["alignment"] == "nan"
    # the copy score is the max over the prompt's references, recomputed from the saved PNG
    r0 = next(r for r in rows if r["prompt_index"] == "0" and r["method"] == "none")
    img = S.load_image(out / r0["image"])[None]
    want = max(
        float(S.copy_scores(S.PixelCopyScorer(), img, [S.load_image(refs / f)[None]])[0]) for f in ("a.png", "b.png")
    )
    assert float(r0["copy_score"]) == pytest.approx(want, abs=2e-2)  # PNG quantisation of the generation
    sail_rows = [r for r in rows if r["method"] == "sail"]
    assert all(0.5 < float(r["prior_ratio"]) < 1.5 for r in sail_rows)
    # resume: an interrupted write (cut last line) is repaired and recomputed; nothing duplicated
    before = (out / "results.csv").read_bytes()
    (out / "results.csv").write_bytes(before[:-20])
    assert cli.main(base + ["--method", "rna", "--setting", "1,4"]) == 0
    assert cli.main(base + ["--method", "sail", "--setting", "1e6", "--sail-max-steps", "2", "--budget", "2"]) == 0
    after = list(csv.DictReader(open(out / "results.csv", encoding="utf-8")))
    assert len(after) == len(rows)
    assert sorted(map(R._key, after)) == sorted(map(R._key, rows))
    # Figure 6 (left) and the qualitative grid
    assert cli.main(["plot-tradeoff", str(out)]) == 0
    for f in ("tradeoff.png", "tradeoff.pdf", "grid.png"):
        assert (out / f).stat().st_size > 0
    pts = R.tradeoff_points(after)
    assert set(pts) == {"none", "rna", "sail"} and [p[0] for p in pts["rna"]] == [1.0, 4.0]


def test_mitigate_cli_errors_are_one_line(tiny_dir, tmp_path, capsys):
    pf = tmp_path / "p.txt"
    pf.write_text("the cat\n", encoding="utf-8")
    base = ["mitigate", "--model", str(tiny_dir), "--prompts", str(pf), "--out", str(tmp_path / "o"), "--quiet"]
    assert cli.main(base + ["--method", "bogus"]) == 2
    assert cli.main(base + ["--method", "sail", "--sail-loss", "paper"]) == 2
    assert "no published ℓ_thres grid" in capsys.readouterr().err
    assert cli.main(base + ["--method", "none", "--copy-scorer", "pixel"]) == 2
    assert "no reference (training) images" in capsys.readouterr().err
    assert cli.main(base + ["--method", "none", "--sscd", str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SSCD" in err
