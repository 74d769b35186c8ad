"""`sharp verify`: today's code reproduces random rows of every committed results table, and a tampered copy of a
table fails with the table, the row and both values named."""
import csv
import shutil

import pytest

from sharp_utils import cli, paths, verify

TABLES = verify.tables()


def test_every_heavy_notebook_result_is_known_to_verify():
    names = {p.relative_to(paths.RESULTS).as_posix() for p in TABLES}
    assert {
        "mnist_9v3_appc_copies.csv",
        "05_detection_table1/detect.csv",
        "02_mnist_9_vs_3/spectra.npz",
        "03_sd_eigen_spectra/spectra.npz",
        "06_mitigation_fig6/results.csv",
        "04_trace_alignment/mnist_points.npz",
        "04_trace_alignment/minisd_points.npz",
        "03_sd_eigen_spectra/regime.csv",
        "05_detection_table1/exact-appc.csv",
        "07_regime_ablation/learned__v2__minisd/regime.csv",
        "07_regime_ablation/exact__appc_pool__dominant_EM/regime.csv",
        "07_regime_ablation/learned__v2__minisd/detect.csv",
        "07_regime_ablation/exact__appc_pool__dominant_EM/results.csv",
        "08_snr_sweep/spectra.csv",
        "08_snr_sweep/detect.csv",
        "08_snr_sweep/copies.csv",
    } <= names
    for p in TABLES:  # a manifest in the notebook's folder; notebook 07's per-model folders name their model
        folder = paths.RESULTS / p.relative_to(paths.RESULTS).parts[0]
        assert p.parent == paths.RESULTS or (folder / "manifest.json").exists(), p
        assert p.parent.parent != folder or (p.parent / "model.json").exists(), p


@pytest.mark.parametrize("table", TABLES, ids=lambda p: p.relative_to(paths.RESULTS).as_posix())
def test_committed_table_rows_recompute(table, capsys):
    assert cli.main(["verify", str(table), "--rows", "1"]) == 0, capsys.readouterr().out


def test_a_tampered_table_fails_naming_table_row_and_values(tmp_path, capsys):
    src = paths.RESULTS / "05_detection_table1"
    dst = tmp_path / "05_detection_table1"
    dst.mkdir()
    shutil.copy(src / "manifest.json", dst / "manifest.json")
    with (src / "detect.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    i = next(k for k, r in enumerate(rows) if r["method"] == "le")  # a cheap row: one step
    honest = float(rows[i]["score"])
    rows[i]["score"] = f"{honest * 1.5 + 1:.6g}"
    with (dst / "detect.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, rows[0].keys())
        w.writeheader()
        w.writerows(rows)
    n, bad = verify.verify_detect(dst / "detect.csv", [i, i + 1])
    assert n == 2 and len(bad) == 1
    msg = str(bad[0])
    assert str(dst / "detect.csv") in msg and f"row {i + 2} (le@1" in msg and rows[i]["score"] in msg
    assert f"{honest:.4g}"[:4] in msg  # the recomputed value is the honest one
    with pytest.raises(SystemExit):
        cli.main(["verify", "--rows", "x"])
    assert cli.main(["verify", str(tmp_path / "missing.csv")]) == 2
    assert "no such results table" in capsys.readouterr().err


def test_a_tampered_snr_sweep_row_is_named(tmp_path):
    """Notebook 08's spectra table: a changed statistic is caught with its row, column and both values."""
    src = paths.RESULTS / "08_snr_sweep" / "spectra.csv"
    dst = tmp_path / "08_snr_sweep" / "spectra.csv"
    dst.parent.mkdir()
    with src.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows = rows[:3]
    rows[1]["gap"] = str(float(rows[1]["gap"]) * 1.01)
    with dst.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    n, bad = verify.verify_snr(dst, [0, 1])
    assert n == 2 and len(bad) == 1 and "gap" in bad[0].row and bad[0].committed == rows[1]["gap"]
