"""Train the toy checkpoints (2D mixture, MNIST 9-vs-3) and write them with their manifest.

    python scripts/train_toy.py toy2d --device cuda --out checkpoints/toy2d
    python scripts/train_toy.py mnist --device cuda --out checkpoints/mnist_9v3_coupled [--no-augment]
    python scripts/train_toy.py mnist --design appc --device cuda --out checkpoints/mnist_9v3_appc --no-augment
    python scripts/train_toy.py mnist --design appc --resume checkpoints/mnist_9v3_coupled --steps 150 ...  # fine-tune

The recipes are sharp_utils.toy_figures.TOY2D_RECIPE / MNIST_RECIPE; --max-seconds caps wall time and the
manifest records the steps actually done.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

from sharp_utils import toy_figures
from sharp_utils.checkpoints import save_state


def main():
    p = argparse.ArgumentParser()
    p.add_argument("which", choices=["toy2d", "mnist"])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--design", choices=["coupled", "appc"], default="coupled",
                   help="MNIST: where the label-dropped examples come from (sharp_utils.toy.mnist_9_vs_3)")
    p.add_argument("--resume", default=None, help="MNIST: fine-tune from this checkpoint folder (recorded)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--second-order-weight", type=float, default=None, help="w of L_DSM + w L_DSM^(2) (paper: 0.5)")
    p.add_argument("--ema-decay", type=float, default=None)
    a = p.parse_args()
    kw = {
        k: v
        for k, v in (
            ("steps", a.steps),
            ("batch_size", a.batch_size),
            ("lr", a.lr),
            ("second_order_weight", a.second_order_weight),
            ("ema_decay", a.ema_decay),
        )
        if v is not None
    }
    if a.resume and a.which != "mnist":
        p.error("--resume is for mnist")
    if a.which == "toy2d":
        net, recipe = toy_figures.train_toy2d(a.seed, a.device, a.max_seconds, **kw)
        name = "toy2d"
    else:
        net, recipe = toy_figures.train_mnist(
            a.seed, a.device, a.max_seconds, augment=not a.no_augment, design=a.design, resume=a.resume, **kw
        )
        name = "mnist_9v3"
    recipe["command"] = " ".join(["python scripts/train_toy.py"] + sys.argv[1:])
    save_state(Path(a.out), name, net.state_dict(), config=net.config, recipe=recipe)
    print(json.dumps({k: v for k, v in recipe.items() if k != "log"}, indent=1))
    print("last log:", recipe["log"][-1])


if __name__ == "__main__":
    main()
