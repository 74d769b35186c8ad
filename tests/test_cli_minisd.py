"""`--model minisd` and `--category` in the CLI, against a hand computation on the shipped MiniSD."""
import json

import pytest
import torch

from sharp_utils.cli import main
from sharp_utils.sampling import prompt_seed
from sharp_utils.results import read_results


@pytest.fixture(scope="module")
def minisd():
    from sharp_utils.registry import load_model

    return load_model("minisd")


def _records(tmp_path, cats):
    f = tmp_path / "p.jsonl"
    recs = [{"caption": f"a red {d} called test", "category": c, "train_ids": [i]} for i, (d, c) in
            enumerate(zip(("one", "two", "three"), cats))]
    f.write_text("\n".join(json.dumps(r) for r in recs), encoding="utf-8")
    return f, recs


def test_detect_minisd_by_name_scores_the_selected_category(minisd, tmp_path):
    f, recs = _records(tmp_path, ("em", "nmem", "em"))
    out = tmp_path / "o.csv"
    assert main(["detect", "--model", "minisd", "--prompts", str(f), "--category", "em", "--method", "wen",
                 "-n", "2", "--out", str(out), "--quiet", "--limit", "1"]) == 0
    assert [r["prompt"] for r in read_results(out)] == [recs[0]["caption"]]
    assert main(["detect", "--model", "minisd", "--prompts", str(f), "--category", "em", "--method", "wen",
                 "-n", "2", "--out", str(out), "--quiet"]) == 0  # resumes: adds the second em prompt
    rows = read_results(out)
    assert [r["prompt"] for r in rows] == [recs[0]["caption"], recs[2]["caption"]]
    # Wen at step 1 by hand: ‖ε(x_T, c) − ε(x_T, ∅)‖ on the shipped MiniSD, mean over the 2 seeded generations
    for r in rows:
        x = minisd.initial_noise([prompt_seed(0, r["prompt"], g) for g in range(2)])
        t = 1000 // 50 * 49 + minisd.steps_offset
        with torch.no_grad():
            d = minisd.eps(x, t, minisd.encode([r["prompt"]] * 2)) - minisd.eps(x, t, None)
        assert float(r["score"]) == pytest.approx(float(d.flatten(1).norm(dim=1).mean()), rel=1e-4)


def test_category_errors_name_the_fix(tmp_path, capsys):
    f, _ = _records(tmp_path, ("em", "nmem", "em"))
    txt = tmp_path / "p.txt"
    txt.write_text("a cat\n", encoding="utf-8")
    for prompts, extra, match in (
        (f, ["--category", "pm"], "has em,nmem"),
        (txt, ["--category", "em"], "needs a .jsonl"),
        (txt, ["--limit", "0"], "positive number"),
    ):
        capsys.readouterr()
        assert main(["detect", "--model", "minisd", "--prompts", str(prompts), *extra,
                     "--out", str(tmp_path / "x.csv")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err


def test_mitigate_minisd_needs_training_ids(tmp_path, capsys):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"caption": "a red one called test"}), encoding="utf-8")
    assert main(["mitigate", "--model", "minisd", "--prompts", str(f), "--method", "rna", "--setting", "1",
                 "--out", str(tmp_path / "m")]) == 2
    assert "train_ids" in capsys.readouterr().err


def test_detect_exact_minisd_equals_the_closed_form(minisd, tmp_path, capsys):
    """`--model exact:minisd-coupled`: Wen's score of the first MiniSD's exact training density, against
    ε^Δ = √ᾱ (E_π[z] − z_c)/σ with the posterior π over the whole (weighted) training pool computed here by hand from
    the training latents (its EM captions pair with one image: z_c is that image's latent)."""
    from sharp_utils import registry

    ex = registry.exact_density("minisd-coupled", minisd)  # ("coupled", "single"): the first MiniSD's own
    recs = [json.loads(line) for line in (minisd_eval_path()).read_text(encoding="utf-8").splitlines()]
    em = next(r for r in recs if r["category"] == "em")
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(em), encoding="utf-8")
    out = tmp_path / "o.csv"
    assert main(["detect", "--model", "exact:minisd-coupled", "--prompts", str(f), "--method", "wen", "-n", "2",
                 "--out", str(out), "--quiet"]) == 0
    (row,) = read_results(out)
    t = 1000 // 50 * 49 + minisd.steps_offset
    a = ex.alpha_bar(t).double()
    x = minisd.initial_noise([prompt_seed(0, em["caption"], g) for g in range(2)]).double().flatten(1)
    z = ex.data  # (N, d) training latents, float64
    idx, logw = ex.conditions[None]
    logits = logw + (-(x[:, None, :] - a.sqrt() * z[idx][None]).pow(2).sum(-1) / (2 * (1 - a)))
    mean_u = torch.softmax(logits, 1) @ z[idx]
    z_c = z[torch.as_tensor(em["train_ids"])].mean(0)  # single-image EM caption: its conditional density is a point
    assert len(em["train_ids"]) == 1
    wen = (a.sqrt() * (mean_u - z_c) / (1 - a).sqrt()).norm(dim=1).mean()
    assert float(row["score"]) == pytest.approx(float(wen), rel=1e-6)
    # attention-map methods and other exact models are refused with one line naming the fix
    for model, method, match in (
        ("exact:minisd", "le", "an exact density runs"),
        ("exact:mnist", "wen", "exact:minisd[:<appc|coupled>"),
        ("exact:minisd:trained", "wen", "appc|coupled"),
    ):
        capsys.readouterr()
        assert (
            main(
                ["detect", "--model", model, "--prompts", str(f), "--method", method, "--out", str(tmp_path / "x.csv")]
            )
            == 2
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err


def minisd_eval_path():
    from sharp_utils import paths

    return paths.PROMPTS / "minisd_eval.jsonl"


def test_mitigate_exact_minisd_copies_from_every_x_T(tmp_path, capsys):
    """`sharp mitigate --model exact:minisd-coupled`: the first MiniSD's EM caption pairs with one training image, so
    its exact conditional density is that point: generations copy it with or without SAIL (copy score above the
    scorer's threshold)."""
    from sharp_utils.minisd.evaluators import load_evaluators
    from sharp_utils.tradeoff import read_mitigation

    em = next(r for r in (json.loads(x) for x in minisd_eval_path().read_text(encoding="utf-8").splitlines())
              if r["category"] == "em")
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(em), encoding="utf-8")
    out = tmp_path / "m"
    assert (
        main(
            [
                "mitigate",
                "--model",
                "exact:minisd-coupled",
                "--prompts",
                str(f),
                "--method",
                "sail",
                "--setting",
                "1.9",
                "-n",
                "1",
                "--sail-max-steps",
                "5",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    rows = read_mitigation(out)
    assert {r["method"] for r in rows} == {"none", "sail"}
    thr = load_evaluators()[0].threshold
    assert all(float(r["copy_score"]) > thr for r in rows), [r["copy_score"] for r in rows]
    capsys.readouterr()
    assert main(["mitigate", "--model", "exact:minisd", "--prompts", str(f), "--method", "rna", "--setting", "1",
                 "--out", str(out)]) == 2
    assert "an exact density runs none,sail" in capsys.readouterr().err
