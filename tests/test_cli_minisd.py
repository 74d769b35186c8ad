"""`--model minisd` and `--category` in the CLI, against a hand computation on the shipped MiniSD."""
import json

import pytest
import torch

from sharp_utils.cli import main
from sharp_utils.pipeline import prompt_seed
from sharp_utils.results import read_results


@pytest.fixture(scope="module")
def minisd():
    from sharp_utils.minisd_experiments import load_model

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
    for prompts, extra, match in ((f, ["--category", "pm"], "has em,nmem"), (txt, ["--category", "em"], "needs a .jsonl"),
                                  (txt, ["--limit", "0"], "positive number")):
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
