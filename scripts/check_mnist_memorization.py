"""Generate threes and nines from an MNIST 9-vs-3 checkpoint and report how many copy a training image.

    python scripts/check_mnist_memorization.py checkpoints/mnist_9v3_coupled --n 500 --device cuda
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sharp_utils import toy_experiments as E  # noqa: E402
from sharp_utils.checkpoints import load_state  # noqa: E402
from sharp_utils.toy import MNIST_LABELS, ClassUNet, TorchScoreModel, ddpm_alphas_cumprod, mnist_9_vs_3  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    state, config = load_state(Path(a.folder), "mnist_9v3")
    net = ClassUNet(config)
    net.load_state_dict(state)
    model = TorchScoreModel(net.to(a.device), ddpm_alphas_cumprod(), null_label=MNIST_LABELS[None])
    data = mnist_9_vs_3()
    out = {}
    for digit, seed0 in (("3", 0), ("9", 10_000)):
        x = E.generate(model, range(seed0, seed0 + a.n), (1, 28, 28), MNIST_LABELS[digit], a.guidance, a.steps,
                       device=a.device)
        train = data["threes"] if digit == "3" else data["nine"][None]
        out[digit] = E.memorization_summary(x, train, train_reference=data["threes"])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
