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
    assert "from sharp_utils.claims import Ev, report" in text and "report(" in text  # the claim lines (claims.report)
    # committed outputs come from the default profile, and no papermill cell overrides the parameters cell
    assert not [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])], \
        "papermill's injected cell is committed: python scripts/clean_notebook.py NOTEBOOK folds it in"
    assert not [c for c in nb.cells if "papermill-error-cell-tag" in c.metadata.get("tags", [])], \
        "a failed papermill run's error cells are committed: rerun the notebook (bash run_all.sh NOTEBOOK)"
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_an_edit_of_the_parameters_cell_takes_effect(path):
    """A reader edits the committed parameters cell (JupyterLab) and runs from the top: later code sees the edit.
    Runs the notebook's cells through its parameters cell and whatever follows it up to the next code cell of the
    experiment (where papermill's injected cell would sit), then prints the parameter (nbclient, kernel `sharp`)."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    i = next(k for k, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    j = i + 1
    while j < len(nb.cells) and (nb.cells[j].cell_type != "code"
                                 or "injected-parameters" in nb.cells[j].metadata.get("tags", [])):
        j += 1
    cells = nb.cells[: i + 1] + [c for c in nb.cells[i + 1: j] if c.cell_type == "code"]
    cells[i].source = cells[i].source.replace('profile = "default"', 'profile = "smoke"')
    nb.cells = cells + [nbformat.v4.new_code_cell("print(profile)")]
    NotebookClient(nb, kernel_name="sharp", timeout=120).execute()
    assert nb.cells[-1].outputs[0]["text"].strip() == "smoke"


def test_clean_notebook_folds_papermill_values_into_the_parameters_cell():
    import importlib.util

    spec = importlib.util.spec_from_file_location("clean_notebook", paths.REPO_ROOT / "scripts" / "clean_notebook.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    params = nbformat.v4.new_code_cell('profile = "default"  # smoke | default | paper\nseed = 0')
    params.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell('# Parameters\nprofile = "paper"\nextra = 3\n')
    injected.metadata["tags"] = ["injected-parameters"]
    nb = nbformat.v4.new_notebook(cells=[params, injected, nbformat.v4.new_code_cell("print(profile)")])
    mod.fold_injected(nb)
    assert len(nb.cells) == 2
    assert nb.cells[0].source == 'profile = "paper"  # smoke | default | paper\nseed = 0\nextra = 3'


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
    assert "claim [" in printed
    assert list((tmp_path / "figures").glob("*.png")) and list((tmp_path / "figures").glob("*.pdf"))
