"""Notebook conventions, and every notebook executes headless in the smoke profile (papermill, kernel `sharp`)."""
import nbformat
import pytest

from sharp_utils import paths

NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_conventions(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    src = tagged[0].source
    assert 'profile = "default"' in src and "seed" in src
    assert nb.metadata.kernelspec["name"] == "sharp"
    assert any("# NBVAL_CHECK_OUTPUT" in c.source for c in nb.cells if c.cell_type == "code")
    text = "\n".join(c.source for c in nb.cells)
    assert "from sharp_utils.claims import report" in text and "report(" in text  # the claim lines (claims.report)
    # committed outputs come from the default profile
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    for c in injected:
        assert 'profile = "default"' in c.source
    # every savefig'd plotting cell ends with plt.show() and sets a figure size
    for c in nb.cells:
        if c.cell_type == "code" and "savefig(" in c.source:
            assert c.source.rstrip().endswith("plt.show()")
            assert "figsize" in c.source


def test_run_tests_executes_every_notebook():
    """run_tests.sh lists the notebooks for nbval (longest first), the guard's under a second CPU capability."""
    from tests.test_cpu_capability_guard import GUARD_NOTEBOOK

    text = (paths.REPO_ROOT / "run_tests.sh").read_text()
    assert "tests/test_cpu_capability_guard.py" in text
    assert all(f"notebooks/{p.name}" in text for p in NOTEBOOKS if p != GUARD_NOTEBOOK)


# nbval re-executes every notebook's default profile in the same test run; the smoke profiles run on request
# (SHARP_SMOKE_ALL=1), to keep the suite within CI's 30 minutes
SMOKE_ON_REQUEST = {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_smoke_profile_executes(path, tmp_path, monkeypatch):
    import os

    import papermill as pm

    if path.name in SMOKE_ON_REQUEST and os.environ.get("SHARP_SMOKE_ALL") != "1":
        pytest.skip("its default profile runs under nbval; SHARP_SMOKE_ALL=1 bash run_tests.sh runs its smoke profile too")

    monkeypatch.setenv("SHARP_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    out = tmp_path / path.name
    pm.execute_notebook(str(path), str(out), parameters={"profile": "smoke"}, kernel_name="sharp",
                        cwd=str(paths.NOTEBOOKS), progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "claim held" in printed
    assert list((tmp_path / "figures").glob("*.png")) and list((tmp_path / "figures").glob("*.pdf"))
