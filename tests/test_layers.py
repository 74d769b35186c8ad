"""The library's layers, read from its imports (AST, function-local imports included): every module imports only
modules of its own or a lower layer, and no two modules import each other, directly or through others. The order
is docs/development.md's "Layers and the library"; a new module is placed here first."""
import ast
import functools

import pytest

from sharp_utils import paths

LAYERS = [
    # 0 — foundations: paths, numbers, closed forms, math on any score function, image scorers
    {"sharp_utils", "paths", "runtime", "profiles", "stats", "scores", "hessian", "spectrum", "trace", "gaussian",
     "checkpoints", "image_scorers"},
    # 1 — exact densities, samplers and metrics on the score interface; claims and their evidence; plots; prompt
    # files; the toy networks and their data
    {"exact", "sampling", "metrics", "claims", "evidence", "plotting", "prompts", "toy"},
    # 2 — model adapters, result tables, quantities along the sampling path
    {"pipeline", "results", "path_spectra", "exact_pipeline"},
    # 3 — the paper's methods; MiniSD's data, model, training set and scorers
    {"detection", "mitigation", "tiny_sd", "minisd", "minisd.data", "minisd.model", "minisd.evaluators",
     "minisd.training_set"},
    # 4 — runners of the methods, their calibration, the toy models' checkpoints and figures
    {"tradeoff", "calibration", "toy_figures"},
    # 5 — the model registry: every model name resolved in one place
    {"registry"},
    # 6 — the experiments on MiniSD or an SD folder
    {"minisd.experiments"},
    # 7 — each notebook's steps, training, verification of committed results
    {"figure4", "minisd.figure3", "minisd.figure6", "minisd.table1", "minisd.ablation", "snr_sweep", "minisd.train",
     "verify"},
    # 8 — the command line
    {"cli"},
]
LAYER = {m: i for i, ms in enumerate(LAYERS) for m in ms}
ROOT = paths.REPO_ROOT / "sharp_utils"


def _modules(root):
    out = {}
    for p in root.rglob("*.py"):
        rel = p.relative_to(root).with_suffix("")
        parts = [x for x in rel.parts if x != "__init__"]
        out[".".join(parts) or "sharp_utils"] = p
    return out


def _imports(name, path, modules):
    """The project's modules that ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package and package != "sharp_utils" else []
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("sharp_utils"):
                target = node.module.removeprefix("sharp_utils").lstrip(".")
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}" if target else alias.name
                found.add(sub if sub in modules else (target or "sharp_utils"))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("sharp_utils").lstrip(".") or "sharp_utils" for a in node.names
                      if a.name.startswith("sharp_utils")}
    return {m for m in found if m in modules and m != name}


@functools.lru_cache(maxsize=4)
def _graph(root=ROOT):
    modules = _modules(root)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _upward(graph, name):
    return sorted(m for m in graph[name] if LAYER.get(m, 99) > LAYER[name])


def _cycles(graph):
    state, found = {}, []

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_every_module_has_a_layer():
    missing = sorted(set(_graph()) - set(LAYER))
    assert not missing, f"place {missing} in tests/test_layers.py's LAYERS and docs/development.md"


@pytest.mark.parametrize("name", sorted(LAYER))
def test_imports_go_down_the_layers(name):
    graph = _graph()
    assert name in graph, f"{name} is in LAYERS but not in sharp_utils: remove it"
    assert not _upward(graph, name), f"{name} (layer {LAYER[name]}) imports {_upward(graph, name)} from a higher layer"


def test_no_import_cycles():
    assert not _cycles(_graph()), f"import cycles: {_cycles(_graph())}"


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
    """The checks fail where they should: a lower module importing a higher one, two modules importing each other."""
    (tmp_path / "sharp_utils").mkdir()
    (tmp_path / "sharp_utils" / "__init__.py").write_text("")
    (tmp_path / "sharp_utils" / "stats.py").write_text("def f():\n    from .cli import main\n")
    (tmp_path / "sharp_utils" / "cli.py").write_text("from . import stats\n")
    graph = _graph(tmp_path / "sharp_utils")
    assert graph["stats"] == {"cli"} and graph["cli"] == {"stats"}
    assert _upward(graph, "stats") == ["cli"] and not _upward(graph, "cli")
    assert _cycles(graph) == [["cli", "stats", "cli"]]
