"""``sharp verify``: recompute a few random rows of each committed results table with today's code.

Each table kind has its recomputation and its tolerance (:data:`TOLERANCE`, stated in docs/development.md). A row
that differs beyond it is a :class:`Mismatch` naming the table, the row and both values.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import path_spectra, paths, registry, snr_sweep, toy_figures
from .detection import DetectOptions, detect
from .hessian import dense_jacobian
from .image_scorers import load_image
from .minisd import experiments, training_set
from .minisd.evaluators import load_evaluators
from .mitigation import generate
from .results import ArrayStore
from .sampling import per_sample_noise, prompt_seed, sample_ddim
from .toy import mnist_9_vs_3
from .trace import exact_sharpness
from .tradeoff import mitigate_prompt

# per table kind: (relative, absolute) tolerance of a recomputed value against the committed one
TOLERANCE = {
    "detect": (2e-2, 1e-6),  # detection scores: batch composition changes float32 sums (FD amplifies it)
    "mnist-copies": (0.0, 1e-2),  # l2 distance of a DDIM sample to its nearest reference (copy threshold 5.4)
    "spectra": (0.0, 1e-3),  # eigenvalues, absolute error in units of the spectrum's largest |eigenvalue|
    "points": (1e-3, 0.0),  # Figure 4's exact traces and proxies (-tr H, ||s||^2, -tr H^3, ||Hs||^2), relative
    "mitigation": (0.0, 2e-2),  # mean absolute pixel difference of a regenerated image (pixels in [0, 1])
    "regime": (0.0, 1e-2),  # copy scores (cosine) of a regenerated MiniSD sample; the copy threshold is about 0.9
    "snr": (1e-6, 1e-9),  # notebook 08's exact-density spectra statistics and detection scores (float64, closed form)
}


@dataclass
class Mismatch:
    table: str
    row: str
    committed: str
    recomputed: str

    def __str__(self) -> str:
        return f"{self.table}: row {self.row}: committed {self.committed}, recomputed {self.recomputed}"


def tables() -> list[Path]:
    """Every committed results table ``sharp verify`` knows how to recompute."""
    root = paths.RESULTS
    found = [root / "mnist_9v3_appc_copies.csv", root / "05_detection_table1" / "detect.csv",
             root / "06_mitigation_fig6" / "results.csv", root / "03_sd_eigen_spectra" / "regime.csv"]
    found += sorted(root.glob("05_detection_table1/exact-*.csv"))
    found += sorted(
        p for name in ("regime", "detect", "results") for p in root.glob(f"07_regime_ablation/*/{name}.csv")
    )
    found += [root / "08_snr_sweep" / f"{name}.csv" for name in ("spectra", "detect", "copies")]
    found += sorted(root.glob("0[0-9]_*/*.npz"))
    return [p for p in found if p.exists()]


def kind(path: Path) -> str:
    """Which recomputation a table needs, from its file name."""
    if path.parent.name == "08_snr_sweep":
        return "snr"  # notebook 08's sweep of the exact density's latent scale
    if path.name == "detect.csv" or (path.name.startswith("exact-") and path.suffix == ".csv"):
        return "detect"  # a network's detection rows, or an exact density's (notebook 05)
    if path.name.endswith("_copies.csv"):
        return "mnist-copies"
    if path.name.endswith("_points.npz"):
        return "points"
    if path.suffix == ".npz":
        return "spectra"
    if path.name == "results.csv":
        return "mitigation"
    if path.name == "regime.csv":
        return "regime"
    raise ValueError(f"{path}: not a results table sharp verify knows (detect.csv, *_copies.csv, *.npz, results.csv, "
                     "regime.csv)")


def _close(a: float, b: float, k: str) -> bool:
    rel, tol = TOLERANCE[k]
    return abs(a - b) <= tol + rel * abs(b)


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _settings(path: Path) -> dict:
    """What a table was computed with: its folder's ``model.json`` (notebook 07's per-model folders), else the
    manifest beside it."""
    named = path.parent / "model.json"
    return json.loads(named.read_text(encoding="utf-8")) if named.exists() else _manifest(path)


def _manifest(path: Path) -> dict:
    m = path.parent / "manifest.json"
    return json.loads(m.read_text(encoding="utf-8")) if m.exists() else {}


def _minisd_records() -> dict[str, dict]:
    """MiniSD's prompt records (eval and dev) by caption."""
    return {r["caption"]: r for split in ("eval", "dev") for r in registry.prompt_records("minisd", split)}


def verify_detect(path: Path, picks: list[int], model_name: str = "minisd") -> tuple[int, list[Mismatch]]:
    """Recompute picked detection rows with ``detect``; a row of an exact density (``exact-*.csv``, its model
    column an "exact:…" registry name) runs on that density's :class:`ExactPipeline`."""
    rows = _read_csv(path)
    man = _settings(path)
    models: dict = {}
    out = []
    for i in picks:
        r = rows[i % len(rows)]
        name = r["model"] if path.name.startswith("exact-") else man.get("model", model_name)
        if name not in models:
            models[name] = registry.load_model(name)
        opts = DetectOptions(num_inference_steps=int(r.get("num_inference_steps") or man.get("num_steps", 50)),
                             guidance_scale=float(r.get("guidance_scale") or 7.5))
        got = next(iter(detect(models[name], [r["prompt"]], (r["method"],), (int(r["steps"]),), (int(r["n"]),),
                               seed=int(r["seed"]), log=lambda s: None, opts=opts)))
        if not _close(float(got["score"]), float(r["score"]), "detect"):
            out.append(Mismatch(str(path), f"{i % len(rows) + 2} ({r['method']}@{r['steps']}, n={r['n']}, prompt "
                                f"{r['prompt_index']})", r["score"], f"{float(got['score']):.6g}"))
    return len(picks), out


def verify_mnist_copies(path: Path, picks: list[int]) -> tuple[int, list[Mismatch]]:
    rows = _read_csv(path)
    settings = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    design = Path(settings["checkpoint"]).name.removeprefix("mnist_9v3_")
    model, data = registry.load_model(f"mnist-{design}"), mnist_9_vs_3(0)
    out = []
    for i in picks:
        r = rows[i % len(rows)]
        d = float(toy_figures.mnist_copy_distances(model, data, r["group"], [int(r["seed"])], settings["guidance"],
                                                   settings["num_steps"])[0])
        if not _close(d, float(r["distance"]), "mnist-copies"):
            out.append(
                Mismatch(str(path), f"{i % len(rows) + 2} ({r['group']}, seed {r['seed']})", r["distance"], f"{d:.6f}")
            )
    return len(picks), out


def _minisd(meta: dict):
    """MiniSD v2's pipeline and, for a conditional array, the caption's text embedding."""
    pipe = registry.load_model(meta.get("model", "minisd"))
    return pipe, (pipe.encode([meta["caption"]]) if meta.get("conditional", True) else None)


def _mnist_jacobian(meta: dict, x):
    """The MNIST App. C checkpoint's conditional score at (t, label) and its dense Jacobian at x."""
    f = registry.load_model("mnist-appc").score_fn(meta["t"], meta["label"])
    return f, dense_jacobian(f, x, chunk=112)


def _recompute_spectrum(folder: str, meta: dict, x: np.ndarray) -> np.ndarray:
    import torch

    if folder.startswith("02_"):
        return np.linalg.eigvals(_mnist_jacobian(meta, torch.from_numpy(x))[1].double().numpy()).real

    pipe, cond = _minisd(meta)
    return path_spectra.spectrum(pipe, torch.from_numpy(x).to(pipe.dtype), meta["t"], cond, k=meta["k"],
                                 dense_max=10**6 if meta["dense"] else 0)


def _recompute_point(folder: str, meta: dict, x: np.ndarray) -> list[float]:
    import torch

    x = torch.from_numpy(x)
    if meta["model"] == "mnist":
        f, J = _mnist_jacobian(meta, x)
    else:
        pipe, cond = _minisd(meta)
        f, J = pipe.score_fn(meta["t"], cond), path_spectra.score_jacobian(pipe, x.to(pipe.dtype), meta["t"], cond)
    return list(exact_sharpness(J, f(x[None].to(J.dtype))).values())


def _compare_spectra(got, ref) -> str | None:
    """None where two spectra agree within tolerance, else how they differ."""
    a, b = np.sort_complex(np.asarray(got, complex)), np.sort_complex(np.asarray(ref, complex))
    err = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
    return (
        None
        if _close(err, 0.0, "spectra")
        else f"{a.real.min():.6g} (most negative); max relative difference {err:.2e}"
    )


def _compare_points(got, ref) -> str | None:
    ref = ref[:4].tolist()  # the exact traces and proxies (the Hutchinson estimate beside them is random)
    return None if all(_close(a, b, "points") for a, b in zip(got, ref)) else ", ".join(f"{v:.6g}" for v in got)


def _stored_keys(path: Path) -> list[str]:
    """The keys of an array store whose inputs and metadata were recorded (what can be recomputed)."""
    store = ArrayStore(path)
    return [k for k in store.keys() if store.meta.get(k) and store.input(k, "x") is not None]


def _verify_store(path: Path, picks: list[int], recompute, compare, describe) -> tuple[int, list[Mismatch]]:
    """Recompute the picked arrays of an :class:`~sharp_utils.results.ArrayStore` from their recorded inputs."""
    store, keys = ArrayStore(path), _stored_keys(path)
    if not keys:
        return 0, [Mismatch(str(path), "-", "no array with its inputs", "rerun the notebook to record them")]
    out = []
    for i in picks:
        key = keys[i % len(keys)]
        ref = store.data[key]
        differs = compare(recompute(path.parent.name, store.meta[key], store.input(key, "x")), ref)
        if differs:
            out.append(Mismatch(str(path), key, describe(ref), differs))
    return len(picks), out


def verify_spectra(path: Path, picks: list[int]) -> tuple[int, list[Mismatch]]:
    return _verify_store(path, picks, _recompute_spectrum, _compare_spectra,
                         lambda ref: f"{np.asarray(ref).real.min():.6g} (most negative)")


def verify_points(path: Path, picks: list[int]) -> tuple[int, list[Mismatch]]:
    return _verify_store(path, picks, _recompute_point, _compare_points,
                         lambda ref: ", ".join(f"{v:.6g}" for v in ref[:4].tolist()))


def verify_mitigation(path: Path, picks: list[int]) -> tuple[int, list[Mismatch]]:
    rows = _read_csv(path)
    man = _settings(path)
    pipe = registry.load_model(man.get("model", "minisd"))
    out = []
    for i in picks:
        r = rows[i % len(rows)]
        n = sum(q["prompt_index"] == r["prompt_index"] and q["method"] == r["method"] and q["setting"] == r["setting"]
                for q in rows)
        lat, _, _ = mitigate_prompt(pipe, r["prompt"], r["method"], float(r["setting"]), n, int(r["seed"]),
                                    man.get("sail_kw", {}))
        img = pipe.decode(lat[int(r["generation"]): int(r["generation"]) + 1])[0].float().clamp(0, 1)
        diff = float((img - load_image(path.parent / r["image"])).abs().mean())
        if not _close(diff, 0.0, "mitigation"):
            out.append(
                Mismatch(
                    str(path),
                    f"{i % len(rows) + 2} ({r['method']} {r['setting']}, prompt {r['prompt_index']}, "
                    f"generation {r['generation']})",
                    r["image"],
                    f"mean |pixel difference| {diff:.3f}",
                )
            )
    return len(picks), out


def verify_regime(path: Path, picks: list[int]) -> tuple[int, list[Mismatch]]:
    """Regenerate picked MiniSD samples of the regime table from their seeds and re-score their copy scores."""
    import torch

    rows = _read_csv(path)
    pipe = registry.load_model(_settings(path).get("model", "minisd"))
    copy_scorer, _ = load_evaluators()
    E = copy_scorer.embed(torch.from_numpy(training_set.training_images()).float() / 255.0)
    records = _minisd_records()
    em_ids = training_set.em_image_ids()
    out = []
    for i in picks:
        r = rows[i % len(rows)]
        x, cond = experiments.seeded_inputs(pipe, [(r["caption"], int(r["generation"]))], int(r["seed"]))
        img = pipe.decode(generate(pipe, x, cond, float(r["guidance"]), int(r["num_steps"]))).float().clamp(0, 1)
        sims = (copy_scorer.embed(img) @ E.T)[0]
        ids = records.get(r["caption"], {}).get("train_ids") or []
        got = {"copy_em": float(sims[em_ids].max()), "copy_nearest": float(sims.max())}
        if ids:
            got["copy_own"] = float(sims[ids].max())
        bad = {c: v for c, v in got.items() if not _close(v, float(r[c]), "regime")}
        if bad:
            out.append(
                Mismatch(
                    str(path),
                    f"{i % len(rows) + 2} ({r['group']}, {r['caption']!r}, generation {r['generation']})",
                    ", ".join(f"{c} {r[c]}" for c in bad),
                    ", ".join(f"{c} {v:.6g}" for c, v in bad.items()),
                )
            )
    return len(picks), out


def verify_snr(path: Path, picks: list[int]) -> tuple[int, list[Mismatch]]:
    """Recompute picked rows of notebook 08's sweep on MiniSD v2's exact density with latents k·z: a prompt's
    first-step spectrum statistics, its step-1 detection score, or one guided DDIM sample's nearest training latent."""
    rows, man = _read_csv(path), _manifest(path)
    pipe = registry.load_model("minisd")
    base = registry.exact_density("minisd", pipe)
    seed, num_steps = int(man.get("seed", 0)), int(man.get("sizes", {}).get("num_steps", 50))
    records = _minisd_records()
    out = []
    for i in picks:
        r = rows[i % len(rows)]
        k = float(r["k"])
        ex = snr_sweep.scaled(base, k)
        where = f"{i % len(rows) + 2} (k = {k:g})"
        if path.name == "spectra.csv":
            x = snr_sweep.shared_x_T(seed, pipe.latent_shape)
            (got,) = snr_sweep.spectra_rows(ex, [records[r["caption"]]], x, snr_sweep.first_timestep(num_steps), k)
            cols = ("nonneg", "mean_eig", "max_eig", "gap", "uncond_max_eig")
        elif path.name == "detect.csv":
            got = next(g for g in snr_sweep.detection_rows(ex, [r["prompt"]], int(r["n"]), int(r["seed"]), num_steps,
                                                           pipe.latent_shape) if g["method"] == r["method"])
            cols = ("score",)
        else:
            c, g = r["caption"], int(r["generation"])
            x_T = per_sample_noise([prompt_seed(seed, c, g)], pipe.latent_shape).double()
            x0 = sample_ddim(ex, x_T, [c or None], None, num_steps, 7.5 if c else 1.0, pipe.steps_offset)
            got, cols = {"nearest": int(snr_sweep.nearest_ids(ex, x0)[0])}, ("nearest",)
        for col in cols:
            if not _close(float(got[col]), float(r[col]), "snr"):
                out.append(Mismatch(str(path), f"{where} {col}", r[col], f"{float(got[col]):.6g}"))
    return len(picks), out


VERIFY = {
    "snr": verify_snr,
    "detect": verify_detect,
    "mnist-copies": verify_mnist_copies,
    "spectra": verify_spectra,
    "points": verify_points,
    "mitigation": verify_mitigation,
    "regime": verify_regime,
}


def verify(path: str | Path, rows: int = 2, seed: int = 0) -> tuple[int, list[Mismatch]]:
    """Recompute ``rows`` random rows of one table; (rows checked, mismatches)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such results table (sharp verify lists the committed ones without arguments)"
        )
    k = kind(path)
    size = len(_read_csv(path)) if path.suffix == ".csv" else max(1, len(_stored_keys(path)))
    picks = np.random.default_rng(seed).choice(size, size=min(rows, size), replace=False).tolist()
    return VERIFY[k](path, picks)
