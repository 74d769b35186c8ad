"""App. C's bars on an MNIST 9-vs-3 checkpoint: how often unconditional samples copy the memorized nine, guided '9'
samples copy it, and guided '3' samples copy a training three (exact 95 % intervals).

    python scripts/check_mnist_memorization.py checkpoints/mnist_9v3_appc --n-uncond 1000 --n 200
"""
import argparse
import json
from pathlib import Path

import torch

from sharp_utils import toy_experiments as E
from sharp_utils.checkpoints import load_state
from sharp_utils.runtime import set_threads
from sharp_utils.toy import MNIST_LABELS, ClassUNet, TorchScoreModel, ddpm_alphas_cumprod, mnist_9_vs_3


def main():
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--n-uncond", type=int, default=1000, help="unconditional samples (guidance 1)")
    p.add_argument("--n", type=int, default=200, help="guided samples per class")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    set_threads()
    state, config = load_state(Path(a.folder), "mnist_9v3")
    net = ClassUNet(config)
    net.load_state_dict(state)
    model = TorchScoreModel(net.to(a.device).eval(), ddpm_alphas_cumprod(), null_label=MNIST_LABELS[None])
    rates = E.mnist_copy_rates(model, mnist_9_vs_3(), a.n_uncond, a.n, a.guidance, a.steps, device=a.device)
    print(json.dumps({k: {"copies": c, "n": n, "rate": c / n, "ci95": ci} for k, (c, n, ci) in rates.items()}, indent=1))


if __name__ == "__main__":
    main()
