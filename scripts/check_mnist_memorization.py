"""App. C's bars on an MNIST 9-vs-3 checkpoint: how often unconditional samples copy the memorized nine, guided '9'
samples copy it, and guided '3' samples copy a training three (Wilson 95 % intervals).

    python scripts/check_mnist_memorization.py checkpoints/mnist_9v3_appc --n-uncond 2000 --n 600 \\
        --out results/mnist_9v3_appc_copies.csv

With ``--out`` every sample's nearest-reference distance is appended to the CSV batch by batch (a rerun resumes
where it stopped) and the settings, with the checkpoint's SHA-256, go to the JSON beside it; notebook 02 reads both.
"""
import argparse
import csv
import datetime
import json
import sys
from pathlib import Path

import torch

from sharp_utils import toy_figures
from sharp_utils.checkpoints import load_state, manifest_sha256
from sharp_utils.runtime import set_threads
from sharp_utils.toy import MNIST_LABELS, ClassUNet, TorchScoreModel, ddpm_alphas_cumprod, mnist_9_vs_3

FIELDS = ["group", "seed", "distance"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--n-uncond", type=int, default=1000, help="unconditional samples (guidance 1)")
    p.add_argument("--n", type=int, default=200, help="guided samples per class")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=100, help="samples per appended batch")
    p.add_argument("--out", default=None, help="CSV of per-sample distances (appended, resumable)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    set_threads()
    folder = Path(a.folder)
    state, config = load_state(folder, "mnist_9v3")
    net = ClassUNet(config)
    net.load_state_dict(state)
    model = TorchScoreModel(net.to(a.device).eval(), ddpm_alphas_cumprod(), null_label=MNIST_LABELS[None])
    data = mnist_9_vs_3()
    settings = {"checkpoint": folder.as_posix(),
                "sha256": manifest_sha256(folder, "mnist_9v3"),
                "guidance": a.guidance, "num_steps": a.steps, "threshold": toy_figures.mnist_copy_threshold(data)}
    rows = []
    if a.out:
        out, meta = Path(a.out), Path(a.out).with_suffix(".json")
        if meta.exists():
            old = json.loads(meta.read_text())
            if any(old.get(k) != v for k, v in settings.items() if k != "threshold"):
                sys.exit(f"{out} was computed with other settings ({meta}): delete both or pass another --out")
        if out.exists():
            with open(out, newline="") as f:
                rows = list(csv.DictReader(f))
        out.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(
            json.dumps(
                {
                    **settings,
                    "command": " ".join(["python scripts/check_mnist_memorization.py"] + sys.argv[1:]),
                    "torch": torch.__version__,
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "date": datetime.date.today().isoformat(),
                },
                indent=1,
            )
            + "\n"
        )
    done = {(r["group"], int(r["seed"])) for r in rows}
    for group, (label, _, s0) in toy_figures.MNIST_COPY_GROUPS.items():
        seeds = [s for s in range(s0, s0 + (a.n_uncond if label is None else a.n)) if (group, s) not in done]
        for i in range(0, len(seeds), a.batch):
            chunk = seeds[i:i + a.batch]
            d = toy_figures.mnist_copy_distances(model, data, group, chunk, a.guidance, a.steps, a.device)
            new = [{"group": group, "seed": s, "distance": f"{float(x):.6f}"} for s, x in zip(chunk, d)]
            rows += new
            if a.out:
                fresh = not out.exists()
                with open(out, "a", newline="") as f:
                    w = csv.DictWriter(f, FIELDS)
                    if fresh:
                        w.writeheader()
                    w.writerows(new)
    rates = toy_figures.copy_rates(rows, settings["threshold"])
    print(
        json.dumps({k: {"copies": c, "n": n, "rate": c / n, "ci95": ci} for k, (c, n, ci) in rates.items()}, indent=1)
    )


if __name__ == "__main__":
    main()
