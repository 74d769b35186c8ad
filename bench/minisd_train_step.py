"""Seconds per MiniSD UNet training step (batch 128, ε-MSE, AdamW) for the shipped architecture (48-96-96) and others.

Sizes a retraining before it starts: ``python bench/minisd_train_step.py`` (CPU: set --threads to the cores you
train on).  Appends one row per width to bench/results/minisd_train_step.csv with device and date.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from detect_throughput import BenchLog, sync
from sharp_utils import minisd as M


def seconds_per_step(channels: tuple[int, ...], batch: int, steps: int, device: str) -> tuple[float, float]:
    """(seconds per optimiser step after 3 warm-up steps, millions of parameters) for one UNet width."""
    unet = M.build_unet(M.unet_config(channels)).to(device).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, 8, 8, generator=g).to(device)
    emb = torch.randn(batch, 16, M.UNET_CONFIG["cross_attention_dim"], generator=g).to(device)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    for i in range(steps + 3):
        if i == 3:
            sync(device)
            t0 = time.perf_counter()
        loss = F.mse_loss(unet(x, t, encoder_hidden_states=emb).sample, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return (time.perf_counter() - t0) / steps, sum(p.numel() for p in unet.parameters()) / 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="32-64-64,48-96-96,64-128-128", help="block_out_channels, comma-separated")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "minisd_train_step.csv"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = BenchLog(args.out, ["widths", "params_m", "batch", "threads", "s_per_step"], args.device)
    for w in args.widths.split(","):
        channels = tuple(int(c) for c in w.split("-"))
        sps, params = seconds_per_step(channels, args.batch, args.steps, args.device)
        log.add(widths=w, params_m=f"{params:.2f}", batch=args.batch, threads=args.threads, s_per_step=f"{sps:.3g}")
    log.markdown(log.cols[2:], ["block channels", "M params", "batch", "threads", "s/step"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
