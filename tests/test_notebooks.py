"""Notebook conventions, and every notebook executes headless in the smoke profile (papermill, kernel `sharp`)."""
import re

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
    assert "from sharp_utils.claims import" in text and "report(" in text  # the claim lines (claims.report)
    # committed outputs come from the default profile, and no papermill cell overrides the parameters cell
    assert not [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])], \
        "papermill's injected cell is committed: python scripts/clean_notebook.py NOTEBOOK folds it in"
    assert not [c for c in nb.cells if "papermill-error-cell-tag" in c.metadata.get("tags", [])], \
        "a failed papermill run's error cells are committed: rerun the notebook (bash run_all.sh NOTEBOOK)"
    # every savefig'd plotting cell ends with plt.show() and sets a figure size (or takes the figure a library
    # plotting function made with its own)
    for c in nb.cells:
        if c.cell_type == "code" and "savefig(" in c.source:
            assert c.source.rstrip().endswith("plt.show()")
            assert "figsize" in c.source or re.search(r"fig = (\w+\.)?plot_\w+\(", c.source)


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
        pytest.skip(
            "its default profile runs under nbval; SHARP_SMOKE_ALL=1 bash run_tests.sh runs its smoke profile too"
        )

    monkeypatch.setenv("SHARP_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    out = tmp_path / path.name
    pm.execute_notebook(str(path), str(out), parameters={"profile": "smoke"}, kernel_name="sharp",
                        cwd=str(paths.NOTEBOOKS), progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "claim [" in printed
    assert list((tmp_path / "figures").glob("*.png")) and list((tmp_path / "figures").glob("*.pdf"))


WIDTH, LINES = 110, 30  # a code cell fits a laptop screen (JupyterLab, 1,200 px, file browser open)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_cells_fit_a_laptop_screen(path):
    nb = nbformat.read(path, as_version=4)
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code":
            continue
        lines = c.source.splitlines()
        wide = [line for line in lines if len(line) > WIDTH]
        assert not wide, f"cell {i}: {len(wide)} lines over {WIDTH} characters, e.g. {wide[0][:60]!r}..."
        assert len(lines) <= LINES, f"cell {i}: {len(lines)} lines: move the computation into sharp_utils"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_ends_with_its_verdicts(path):
    """The last cell renders the verdict section from the claims registry (claims.verdicts) for this notebook, and its
    committed output gives every claim of the notebook a verdict and a recorded reason."""
    from sharp_utils.claims import CLAIMS

    nb = nbformat.read(path, as_version=4)
    last = nb.cells[-1]
    assert last.cell_type == "code" and f'verdicts("{path.name}")' in last.source
    assert nb.cells[-2].cell_type == "markdown" and nb.cells[-2].source.startswith("## Verdicts")
    shown = "".join(o.get("data", {}).get("text/markdown", "") for o in last.outputs)
    for key, claim in CLAIMS.items():
        if claim.notebook == path.name:
            assert f"`{key}`" in shown, f"claim {key} is not in the committed verdict section: rerun {path.name}"
    assert "no reason recorded" not in shown, "a verdict changed: add its reason to sharp_utils.claims.EXPLAINED"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_try_it_has_a_prediction_a_runtime_and_a_collapsed_answer(path):
    nb = nbformat.read(path, as_version=4)
    i = next(k for k, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith("## Try it"))
    ask, code, answer = nb.cells[i: i + 3]
    assert "*Predict*" in ask.source and " s on 2 cores" in ask.source
    assert code.cell_type == "code"
    assert answer.cell_type == "markdown" and answer.source.startswith("<details><summary>Answer")
    assert "ANSWER" not in answer.source, "the answer is a placeholder: run the cell and write what it printed"


# terms of docs/glossary.md: the first use of each in a notebook's text links to its entry
GLOSSARY_TERMS = {
    "EM": "memorized-em-pm-nmem",
    "PM": "memorized-em-pm-nmem",
    "exact density": "exact-density",
    "exact diffused density": "exact-density",
    "App. C pool": "app-c-pool-coupled-pool",
    "bars": "bars",
    "copy score": "copy-score-alignment-score",
    "Arnoldi": "ritz-values-krylov-dimension-arnoldi",
    "Krylov dimension": "ritz-values-krylov-dimension-arnoldi",
    "Ritz values": "ritz-values-krylov-dimension-arnoldi",
    "Hutchinson": "hutchinson",
    "SAIL": "sail-threshold-gaussian-shell",
    "ℓ_thres": "sail-threshold-gaussian-shell",
    "Gaussian shell": "sail-threshold-gaussian-shell",
    "Pareto-better": "pareto",
    "LE": "le-ae-be-anisotropy-tiled-distance",
    "AE": "le-ae-be-anisotropy-tiled-distance",
    "BE": "le-ae-be-anisotropy-tiled-distance",
    "dominant": "dominant-em-single-image-em",
    "re-draw control": "sail-threshold-gaussian-shell",
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_glossary_terms_are_linked_at_first_use(path):
    import re

    text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    links = [(m.start(), m.end(), m.group(2)) for m in
             re.finditer(r"\[([^\]]*)\]\(\.\./docs/glossary\.md#([\w-]+)\)", text)]
    for term, anchor in GLOSSARY_TERMS.items():
        m = re.search(r"(?<![\w-])" + re.escape(term) + r"(?![\w])", text)
        if m is None:
            continue
        inside = [a for s, e, a in links if s <= m.start() < e]
        assert inside == [anchor], f"first use of {term!r} is not linked to docs/glossary.md#{anchor}"
