"""Prompt files, result files, resuming, sharding and the CLI (tiny random pipeline, CPU)."""
import csv
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from sharp_utils import metrics, paths
from sharp_utils.cli import main
from sharp_utils.prompts import PromptFileError, read_prompts
from sharp_utils.results import ResultWriter, read_results
from sharp_utils.tiny_sd import save_tiny_pipeline

# ---------------------------------------------------------------- prompt files


def test_txt_with_bom_crlf_blank_lines_html_and_no_final_newline(tmp_path):
    f = tmp_path / "p.txt"
    f.write_bytes("\ufeffthe cat\r\n\r\n  a <i>dog</i> \"quoted\" / slash\nthe cat\n\u00e9t\u00e9".encode("utf-8"))
    ps = read_prompts(f)
    assert ps.prompts == ["the cat", 'a <i>dog</i> "quoted" / slash', "the cat", "\u00e9t\u00e9"]
    assert ps.duplicates == {"the cat": 2}


def test_jsonl_caption_field(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"caption": "a", "index": 1}\n\n{"caption": "b <b>x</b>", "url": "u"}', encoding="utf-8")
    ps = read_prompts(f)
    assert ps.prompts == ["a", "b <b>x</b>"] and ps.records[1]["url"] == "u"


@pytest.mark.parametrize("content,suffix,match", [
    (b"", ".txt", "no prompts"),
    (b"\n  \n\r\n", ".txt", "no prompts"),
    (b"\xff\xfe bad", ".txt", "not UTF-8"),
    (b'{"caption": "a"}\n{oops', ".jsonl", "invalid JSON"),
    (b'{"text": "a"}', ".jsonl", "no string field 'caption'"),
])
def test_bad_prompt_files_give_the_documented_errors(tmp_path, content, suffix, match):
    f = tmp_path / f"p{suffix}"
    f.write_bytes(content)
    with pytest.raises(PromptFileError, match=match):
        read_prompts(f)


def test_unreadable_prompt_file(tmp_path):
    with pytest.raises(PromptFileError, match="cannot read"):
        read_prompts(tmp_path / "missing.txt")
    with pytest.raises(PromptFileError, match="cannot read"):
        read_prompts(tmp_path)


SD = paths.sd_prompts_dir()


@pytest.mark.skipif(not (SD / "sd1_mem.txt").is_file(), reason="paper prompt sets not present (sharp prompts download)")
def test_paper_prompt_sets_parse_completely():
    """Counts from the sets' README; the .txt (no final newline) and .jsonl agree caption for caption."""
    counts = {"sd1_mem.txt": 500, "sd1_nmem.txt": 500, "sd2_mem.txt": 219, "sd2_nmem.txt": 500, "sd1_mem.jsonl": 500,
              "sd2_mem.jsonl": 219}
    sets = {name: read_prompts(SD / name) for name in counts}
    for name, c in counts.items():
        assert len(sets[name].prompts) == c, name
    assert sets["sd1_mem.txt"].prompts == sets["sd1_mem.jsonl"].prompts
    assert sets["sd1_nmem.txt"].prompts == sets["sd2_nmem.txt"].prompts
    # the README: sd2's txt and jsonl differ in order and in one caption
    assert len(set(sets["sd2_mem.txt"].prompts) ^ set(sets["sd2_mem.jsonl"].prompts)) == 2


# ---------------------------------------------------------------- evaluation pieces (oracles)


def test_tiled_l2_against_hand_computation():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 16, 16, generator=g)
    b = a.clone()
    b[:, 4:8, 8:12] += 0.5  # one 4×4 tile differs by 0.5 everywhere
    assert metrics.tile_size(512) == 128 and metrics.tile_size(16) == 4
    assert float(metrics.tiled_l2_distance(a, b, 4)) == pytest.approx(0.5)
    c = torch.rand(3, 16, 16, generator=g)
    tiles = [((a - c)[:, i:i + 4, j:j + 4] ** 2).mean().sqrt() for i in range(0, 16, 4) for j in range(0, 16, 4)]
    assert float(metrics.tiled_l2_distance(a, c, 4)) == pytest.approx(float(max(tiles)), rel=1e-6)
    s = metrics.tiled_l2_score(torch.stack([a, b, c]))
    want = -(0.5 + float(max(tiles)) + float(metrics.tiled_l2_distance(b, c, 4))) / 3
    assert s == pytest.approx(want, rel=1e-6)
    assert metrics.tiled_l2_score(torch.stack([a, a])) == 0.0
    with pytest.raises(ValueError, match="n ≥ 2"):
        metrics.tiled_l2_score(a[None])


def test_entropies_and_masked_wen():
    L = 8
    u = torch.full((2, L), 1.0 / L)
    torch.testing.assert_close(metrics.attention_entropy(u), torch.full((2,), math.log(8), dtype=torch.float64))
    onehot = torch.zeros(1, L)
    onehot[0, 0] = 1
    assert float(metrics.attention_entropy(onehot)) == 0.0
    # summary tokens of a prompt with 3 tokens (begin, word, end): indices 2..7
    torch.testing.assert_close(metrics.summary_entropy(u, torch.tensor([3, 3])),
                               torch.full((2,), 6 / 8 * math.log(8), dtype=torch.float64))
    d = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(metrics.masked_wen_metric(d, torch.ones(2, 5, 5) * 3), metrics.wen_metric(d))
    m = torch.zeros(2, 5, 5)
    m[:, :2] = 1  # mask keeps 2 of 5 rows; mean(m) = 0.4
    torch.testing.assert_close(metrics.masked_wen_metric(d, m), d[:, :, :2].flatten(1).norm(dim=1) / 0.4)


# ---------------------------------------------------------------- result files and CLI


def test_result_writer_resumes_and_repairs_a_cut_line(tmp_path):
    f = tmp_path / "r.csv"
    rows = [{"prompt_index": i, "prompt": f"p{i}", "method": "wen", "steps": 1, "n": 4, "score": i / 3, "seed": 0,
             "seconds": 0.1} for i in range(3)]
    with ResultWriter(f) as w:
        for r in rows[:2]:
            w.write(r)
    with f.open("a") as fh:
        fh.write("2,p2,wen,1,4,0.66")  # an interrupted write
    with ResultWriter(f) as w:
        assert w.is_done(rows[0]) and w.is_done(rows[1]) and not w.is_done(rows[2])
        w.write(rows[2])
    got = read_results(f)
    assert [r["prompt"] for r in got] == ["p0", "p1", "p2"]
    assert float(got[2]["score"]) == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(save_tiny_pipeline(tmp_path_factory.mktemp("tiny")))


def _prompt_file(tmp_path, name, lines):
    f = tmp_path / name
    f.write_text("\n".join(lines), encoding="utf-8")
    return str(f)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return sorted((r["prompt_index"], r["method"], r["steps"], r["n"], r["score"]) for r in csv.DictReader(fh))


COMMON = ["--method", "wen,ours-fd,le", "--steps", "1,2", "--n", "1,2", "--num-inference-steps", "4",
          "--batch-size", "4", "--quiet"]


def test_cli_detect_interrupted_then_resumed_equals_one_run(tiny, tmp_path, monkeypatch):
    prompts = _prompt_file(tmp_path, "p.txt", ["the cat", "an apple", "zebra", "blue sky"])
    ref = tmp_path / "ref.csv"
    assert main(["detect", "--model", tiny, "--prompts", prompts, "--out", str(ref), *COMMON]) == 0

    import sharp_utils.detection as det
    real = det.detect

    def interrupted(*a, **k):
        for i, row in enumerate(real(*a, **k)):
            if i == 7:
                raise KeyboardInterrupt
            yield row

    out = tmp_path / "out.csv"
    monkeypatch.setattr(det, "detect", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["detect", "--model", tiny, "--prompts", prompts, "--out", str(out), *COMMON])
    assert len(_rows(out)) == 7
    monkeypatch.setattr(det, "detect", real)
    assert main(["detect", "--model", tiny, "--prompts", prompts, "--out", str(out), *COMMON]) == 0
    got, want = _rows(out), _rows(ref)
    assert [r[:4] for r in got] == [r[:4] for r in want]  # nothing lost, nothing duplicated
    for g, w in zip(got, want):  # batch composition differs after resuming: float roundoff only
        assert float(g[4]) == pytest.approx(float(w[4]), rel=1e-2 if g[1] == "ours-fd" else 1e-5)
    assert len(_rows(ref)) == 4 * (2 * 2 * 2 + 2)  # wen, ours-fd: 2 steps × 2 n; le: step 1 × 2 n


def test_cli_evaluate_prints_table_and_writes_csv(tiny, tmp_path, capsys):
    mem = _prompt_file(tmp_path, "mem.txt", ["the cat", "an apple", "zebra"])
    nmem = _prompt_file(tmp_path, "nmem.txt", ["blue sky", "of the and", "red", "green tea"])
    for src, out in ((mem, "m.csv"), (nmem, "n.csv")):
        assert main(["detect", "--model", tiny, "--prompts", src, "--out", str(tmp_path / out), *COMMON]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "m.csv"), str(tmp_path / "n.csv"), "--out", str(tmp_path / "t.csv")]) == 0
    text = capsys.readouterr().out
    assert text.startswith("| method | steps | n | AUC |") and "| ours-fd | 1 | 2 |" in text
    with open(tmp_path / "t.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 10
    # the AUC in the table is sklearn's on the CSV scores
    from sklearn.metrics import roc_auc_score

    m = [
        float(r["score"])
        for r in read_results(tmp_path / "m.csv")
        if (r["method"], r["steps"], r["n"]) == ("wen", "1", "2")
    ]
    n = [
        float(r["score"])
        for r in read_results(tmp_path / "n.csv")
        if (r["method"], r["steps"], r["n"]) == ("wen", "1", "2")
    ]
    row = next(r for r in table if (r["method"], r["steps"], r["n"]) == ("wen", "1", "2"))
    assert float(row["auc"]) == pytest.approx(roc_auc_score([1] * len(m) + [0] * len(n), m + n))


def test_cli_errors_are_one_line_with_exit_2(tiny, tmp_path, capsys):
    prompts = _prompt_file(tmp_path, "p.txt", ["the cat"])
    empty = _prompt_file(tmp_path, "e.txt", [""])
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("a,b\n1,2\n")
    cases = [
        (["detect", "--model", tiny, "--prompts", prompts, "--out", "x.csv", "--method", "nope"], "unknown"),
        (["detect", "--model", str(tmp_path), "--prompts", prompts, "--out", "x.csv"], "model_index.json"),
        (["detect", "--model", tiny, "--prompts", empty, "--out", "x.csv"], "no prompts"),
        (["detect", "--model", tiny, "--prompts", prompts, "--out", str(bad_csv), "--quiet"], "new --out file"),
        (["evaluate", str(tmp_path / "none.csv"), str(bad_csv)], "sharp detect"),
    ]
    for argv, match in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err and match in err[-1] and err[-1].startswith("sharp "), (argv, err)


def test_sharded_run_with_two_processes_merges_to_the_single_run(tiny, tmp_path):
    """torchrun (what accelerate launch also sets up) with 2 CPU processes: each writes its part; evaluate merges."""
    prompts = _prompt_file(tmp_path, "p.txt", ["the cat", "an apple", "zebra", "blue sky", "red"])
    args = ["detect", "--model", tiny, "--prompts", prompts, "--method", "wen,ours-fd", "--steps", "1", "-n", "2",
            "--num-inference-steps", "4", "--quiet"]
    single = tmp_path / "single.csv"
    assert main([*args, "--out", str(single)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "sharp_utils.cli", *args, "--out", str(tmp_path / "sharded.csv")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    parts = sorted(p.name for p in tmp_path.glob("sharded.rank*-of-2.csv"))
    assert parts == ["sharded.rank0-of-2.csv", "sharded.rank1-of-2.csv"]
    merged = read_results(tmp_path / "sharded.csv")
    want = read_results(single)
    key = lambda r: (int(r["prompt_index"]), r["method"])  # noqa: E731
    assert sorted(map(key, merged)) == sorted(map(key, want))
    ws = {key(r): float(r["score"]) for r in want}
    for r in merged:
        assert float(r["score"]) == pytest.approx(ws[key(r)], rel=1e-2 if r["method"] == "ours-fd" else 1e-5)


def test_jsonl_prompts_through_cli(tiny, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(json.dumps({"caption": c, "index": i}) for i, c in enumerate(["the cat", "zebra"])))
    out = tmp_path / "o.csv"
    assert main(["detect", "--model", tiny, "--prompts", str(f), "--out", str(out), "--method", "anisotropy",
                 "--n", "1", "--num-inference-steps", "4", "--quiet"]) == 0
    assert [r["prompt"] for r in read_results(out)] == ["the cat", "zebra"]


def test_array_store_computes_once_keeps_provenance_and_survives_reload(tmp_path):
    import json

    import numpy as np

    from sharp_utils.results import ArrayStore, results_dir, write_manifest

    calls = []

    def compute():
        calls.append(1)
        return np.arange(3.0)

    s = ArrayStore(tmp_path / "r" / "a.npz")
    assert s.get("k", compute) is s.get("k", compute) and len(calls) == 1 and s.new == 1
    again = ArrayStore(tmp_path / "r" / "a.npz")
    np.testing.assert_array_equal(again.get("k", compute), np.arange(3.0))
    assert len(calls) == 1 and again.new == 0  # read back, not recomputed
    again.get("k", compute, inputs={"x": np.ones(2)}, meta={"t": 5})  # provenance added to a stored array
    third = ArrayStore(tmp_path / "r" / "a.npz")
    assert third.meta["k"] == {"t": 5} and third.keys() == ["k"] and len(calls) == 1
    np.testing.assert_array_equal(third.input("k", "x"), np.ones(2))
    assert results_dir("05_x", "default") == paths.RESULTS / "05_x"
    assert (
        results_dir("05_x", "smoke") != paths.RESULTS / "05_x"
        and results_dir("05_x", "paper", str(tmp_path)) == tmp_path
    )
    m = json.loads(write_manifest(tmp_path / "r", profile="default", seed=0).read_text())
    assert m["profile"] == "default" and m["seed"] == 0 and {"commit", "machine", "date", "torch"} <= set(m)
    m = json.loads(write_manifest(tmp_path / "r", section="exact.csv", rows=3).read_text())  # a second table's entry
    assert m["profile"] == "default" and m["exact.csv"]["rows"] == 3 and "commit" in m["exact.csv"]
