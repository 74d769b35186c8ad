"""Result files: CSV appended row by row, resumable, shardable; and Table 1's evaluation of them.

A run writes one row per (prompt, method, steps, n) and flushes it at once, so an interrupted run loses
at most the row being written; rerunning skips the rows already there.  Under ``accelerate launch`` or
``torchrun`` (``RANK``/``WORLD_SIZE`` set) each process takes every WORLD_SIZE-th prompt and writes
``<stem>.rank<R>-of-<W>.csv``; :func:`read_results` merges the parts back.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from .metrics import detection_report
from .paths import REPO_ROOT, RESULTS

DETECT_COLUMNS = ("prompt_index", "prompt", "method", "steps", "n", "score", "seed", "seconds", "model", "dtype",
                  "guidance_scale", "num_inference_steps")
KEY = ("prompt_index", "prompt", "method", "steps", "n", "seed")


class ResultFileError(ValueError):
    """A result file that cannot be appended to or read; the message names the fix."""


def shard() -> tuple[int, int]:
    """(rank, world size) from the environment accelerate/torchrun set; (0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shard_path(out: str | Path, rank: int, world: int) -> Path:
    out = Path(out)
    return out if world == 1 else out.with_name(f"{out.stem}.rank{rank}-of-{world}{out.suffix or '.csv'}")


def _key(row: dict) -> tuple:
    return (int(row["prompt_index"]), str(row["prompt"]), str(row["method"]), int(row["steps"]), int(row["n"]),
            int(row["seed"]))


class ResultWriter:
    """Append-only CSV with a fixed header; knows which keys are done (for resuming)."""

    def __init__(self, path: str | Path, columns: Iterable[str] = DETECT_COLUMNS, key=_key):
        self.path, self.columns, self.keyf = Path(path), tuple(columns), key
        self.done: set = set()
        if self.path.exists() and self.path.stat().st_size:
            self._repair_partial_line()
            with self.path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if tuple(reader.fieldnames or ()) != self.columns:
                    raise ResultFileError(
                        f"{self.path}: its columns {reader.fieldnames} differ from {list(self.columns)}; "
                        "write to a new --out file (or delete this one to start over)")
                for row in reader:
                    self.done.add(self.keyf(row))
            self._f = self.path.open("a", newline="", encoding="utf-8")
            self._w = csv.DictWriter(self._f, self.columns)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = self.path.open("w", newline="", encoding="utf-8")
            self._w = csv.DictWriter(self._f, self.columns)
            self._w.writeheader()
            self._f.flush()

    def _repair_partial_line(self) -> None:
        """Drop a last line cut off by an interrupted write (no final newline): it is recomputed."""
        data = self.path.read_bytes()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        print(f"{self.path}: dropping an incomplete last line left by an interrupted run")
        with self.path.open("r+b") as f:
            f.truncate(cut)

    def is_done(self, row: dict) -> bool:
        return self.keyf(row) in self.done

    def write(self, row: dict) -> None:
        self._w.writerow({c: row.get(c, "") for c in self.columns})
        self._f.flush()
        os.fsync(self._f.fileno())
        self.done.add(self.keyf(row))

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def result_parts(path: str | Path) -> list[Path]:
    """``path`` itself if it exists, else its shard parts ``<stem>.rank*-of-*.csv``."""
    path = Path(path)
    if path.is_file():
        return [path]
    parts = sorted(Path(p) for p in glob.glob(str(path.with_name(f"{path.stem}.rank*-of-*{path.suffix or '.csv'}"))))
    if not parts:
        raise ResultFileError(
            f"{path}: no such file and no shard parts {path.stem}.rank*-of-*.csv; run `sharp detect` first"
        )
    return parts


def read_results(path: str | Path) -> list[dict]:
    """Rows of a result file or of its merged shard parts (duplicate keys kept once)."""
    rows, seen = [], set()
    for p in result_parts(path):
        with p.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                k = _key(row)
                if k not in seen:
                    seen.add(k)
                    rows.append(row)
    return rows


def evaluate_tables(mem_rows: list[dict], nmem_rows: list[dict]) -> list[dict]:
    """Table 1's shape: one line per (method, steps, n) present in both files with AUC, TPR@1%/3%FPR, s/prompt."""
    def group(rows):
        g = defaultdict(list)
        for r in rows:
            g[(r["method"], int(r["steps"]), int(r["n"]))].append(r)
        return g

    gm, gn = group(mem_rows), group(nmem_rows)
    out = []
    for key in sorted(set(gm) & set(gn)):
        rm, rn = gm[key], gn[key]
        rep = detection_report([float(r["score"]) for r in rm], [float(r["score"]) for r in rn])
        secs = [float(r["seconds"]) for r in rm + rn if r.get("seconds") not in (None, "")]
        out.append({"method": key[0], "steps": key[1], "n": key[2], "auc": rep["auc"],
                    "tpr@1%fpr": rep["tpr@1%fpr"], "tpr@3%fpr": rep["tpr@3%fpr"], "n_mem": rep["n_mem"],
                    "n_nmem": rep["n_nmem"], "seconds_per_prompt": sum(secs) / len(secs) if secs else float("nan")})
    return out


# Table 1 of Jeon et al. 2025: (method, steps, n) -> (SD v1.4 AUC, TPR@1%FPR, SD v2.0 AUC, TPR@1%FPR)
PAPER_TABLE1 = {
    ("tiled-l2", 50, 4): (0.908, 0.088, 0.792, 0.114), ("tiled-l2", 50, 16): (0.94, 0.232, 0.907, 0.114),
    ("le", 1, 1): (0.846, 0.116, 0.848, 0), ("le", 1, 4): (0.839, 0.13, 0.853, 0),
    ("le", 1, 16): (0.832, 0.124, 0.851, 0),
    ("ae", 50, 1): (0.606, 0, 0.809, 0), ("ae", 50, 4): (0.628, 0, 0.82, 0), ("ae", 50, 16): (0.598, 0, 0.817, 0),
    ("be", 50, 1): (0.986, 0.95, 0.983, 0.908), ("be", 50, 4): (0.997, 0.98, 0.99, 0.945),
    ("be", 50, 16): (0.997, 0.982, 0.99, 0.949),
    ("wen", 1, 1): (0.976, 0.896, 0.948, 0.739), ("wen", 1, 4): (0.992, 0.944, 0.98, 0.876),
    ("wen", 1, 16): (0.99, 0.928, 0.983, 0.881),
    ("wen", 5, 1): (0.991, 0.932, 0.969, 0.885), ("wen", 5, 4): (0.997, 0.978, 0.984, 0.917),
    ("wen", 5, 16): (0.998, 0.982, 0.987, 0.931),
    ("wen", 50, 1): (0.983, 0.948, 0.982, 0.904), ("wen", 50, 4): (0.996, 0.982, 0.99, 0.949),
    ("wen", 50, 16): (0.998, 0.98, 0.991, 0.945),
    ("ours-fd", 1, 1): (0.987, 0.908, 0.959, 0.74), ("ours-fd", 1, 4): (0.998, 0.982, 0.991, 0.895),
    ("ours-jvp", 1, 1): (0.987, 0.908, 0.959, 0.74), ("ours-jvp", 1, 4): (0.998, 0.982, 0.991, 0.895),
}


def table1_frame(table: list[dict], extra: dict[str, dict] | None = None):
    """Table 1 as a DataFrame: per (method, steps, n) of :func:`evaluate_tables` our AUC and TPR@1%FPR beside the
    paper's SD v1.4 / v2.0 numbers; ``extra`` adds columns {name: {(method, steps, n): value}}."""
    import pandas as pd

    out = []
    for r in table:
        key = (r["method"], r["steps"], r["n"])
        p = PAPER_TABLE1.get(key, (np.nan,) * 4)
        out.append({"method": key[0], "steps": key[1], "n": key[2], "AUC": round(r["auc"], 3),
                    "TPR@1%FPR": round(r["tpr@1%fpr"], 3), "paper SD1.4 AUC": p[0], "paper SD1.4 TPR": p[1],
                    "paper SD2.0 AUC": p[2], "paper SD2.0 TPR": p[3],
                    **{name: round(col[key], 3) if key in col else np.nan for name, col in (extra or {}).items()}})
    return pd.DataFrame(out)

def markdown_table(rows: list[dict]) -> str:
    head = ("| method | steps | n | AUC | TPR@1%FPR | TPR@3%FPR | mem | non-mem | s/prompt |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    body = [
        f"| {r['method']} | {r['steps']} | {r['n']} | {r['auc']:.3f} | {r['tpr@1%fpr']:.3f} | {r['tpr@3%fpr']:.3f} | "
        f"{r['n_mem']} | {r['n_nmem']} | {r['seconds_per_prompt']:.3g} |"
        for r in rows
    ]
    return "\n".join([head, *body])


def results_dir(notebook: str, profile: str, out_dir: str = "") -> Path:
    """Where a notebook keeps its resumable result tables: ``out_dir`` if given; the committed
    ``results/<notebook>/`` for the default profile (a rerun reads those rows and computes only missing ones);
    a fresh temporary folder for the other profiles."""
    import tempfile

    if out_dir:
        return Path(out_dir)
    if profile == "default":
        return RESULTS / notebook
    return Path(tempfile.mkdtemp(prefix=f"{notebook}_{profile}_"))


def write_manifest(folder: str | Path, section: str | None = None, **settings) -> Path:
    """``manifest.json`` beside a results table: the settings given (profile, seeds, sizes, seconds) plus the commit,
    the machine and the date; written after a run that computed rows.  With ``section`` (another table of the same
    folder) the manifest is kept and this run's entry goes under ``manifest[section]``."""
    import datetime
    import platform
    import subprocess

    import torch

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu = platform.processor() or ""
    try:  # Linux names the CPU model here
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = dict(settings, commit=git("rev-parse", "HEAD"),
                uncommitted_changes=bool(git("status", "--porcelain", "--untracked-files=no")),
                machine=f"{platform.machine()} {cpu}".strip(),
                cpus=os.cpu_count(), torch=torch.__version__, threads=torch.get_num_threads(),
                date=datetime.date.today().isoformat())
    path = Path(folder) / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if section is not None:
        old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        info = old | {section: info}
    path.write_text(json.dumps(info, indent=1, default=str) + "\n", encoding="utf-8")
    return path


class ArrayStore:
    """Arrays computed once and kept in one ``.npz`` (e.g. ``results/<notebook>/spectra.npz``): :meth:`get` returns a
    stored array or computes, stores and saves it (after each new key, so an interrupted run loses nothing). ``inputs``
    (arrays, kept as ``key|in:name``) and ``meta`` (JSON, in ``<name>.json`` beside it) record what the array was
    computed from, so ``sharp verify`` can recompute it."""

    def __init__(self, path: str | Path):
        self.path, self.new, self.seconds = Path(path), 0, 0.0  # arrays computed by this process, and their time
        self.data = dict(np.load(self.path, allow_pickle=False)) if self.path.exists() else {}
        self.meta_path = self.path.with_suffix(".json")
        self.meta = json.loads(self.meta_path.read_text(encoding="utf-8")) if self.meta_path.exists() else {}

    def keys(self) -> list[str]:
        """The stored arrays' keys (inputs, kept as ``key|in:name``, excluded)."""
        return [k for k in self.data if "|in:" not in k]

    def input(self, key: str, name: str):
        """The input ``name`` an array was computed from (None where it was not recorded)."""
        return self.data.get(f"{key}|in:{name}")

    def get(self, key: str, compute, inputs: dict | None = None, meta: dict | None = None):
        missing = key not in self.data
        if missing or (not self.meta.get(key) and (inputs or meta)):  # new, or stored before its provenance was kept
            if missing:
                start = time.perf_counter()
                self.data[key] = np.asarray(compute())
                self.new += 1
                self.seconds += time.perf_counter() - start
            for name, v in (inputs or {}).items():
                self.data[f"{key}|in:{name}"] = np.asarray(v)
            if meta:
                self.meta[key] = meta
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, **self.data)
            os.replace(tmp, self.path)
            self.meta_path.write_text(json.dumps(self.meta, indent=0, sort_keys=True) + "\n", encoding="utf-8")
        return self.data[key]
