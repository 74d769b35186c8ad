"""Seconds per prompt of SAIL (both losses) against plain generation, and peak GPU memory.

For each architecture: plain guided 50-step DDIM of n images (the cost every method pays), and SAIL with a
budget of B candidates run for a fixed number of Adam steps S (the threshold is set unreachable so every
candidate runs all S steps: the worst case of Algorithm 2's early stopping) followed by the same generation.
On trained weights SAIL stops earlier; S is a flag so the table can be read at other step counts.

'sd1' / 'sd2' are SD v1.4 / v2.0 UNets built from their published configs with random weights (timing only);
'tiny' is the tests' tiny pipeline; 'minisd' (or any local pipeline folder via --model) loads real weights.
On a GPU: ``python bench/mitigation_cost.py --arch sd1,sd2``; on CPU it defaults to the tiny pipeline.
Appends one row per (arch, method) to bench/results/mitigation_cost.csv with device and date.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from detect_throughput import BenchLog, build_model, sync
from sharp_utils.mitigation import MitigationError, generate, sail
from sharp_utils.pipeline import load_pipeline, PipelineScoreModel


def _model(arch: str, dtype: torch.dtype, device: str) -> PipelineScoreModel:
    if arch in ("sd1", "sd2", "tiny"):
        return build_model(arch, dtype, device)
    model = load_pipeline(arch, dtype=dtype, device=device)  # already a PipelineScoreModel
    model.name = arch
    return model


def _cond(model: PipelineScoreModel, seed: int) -> torch.Tensor:
    L, D = model.uncond_embedding.shape[1:]
    return torch.randn(1, L, D, generator=torch.Generator().manual_seed(seed)).to(model.device, model.dtype)


def time_prompt(model, method: str, n: int, budget: int, sail_steps: int, prompt: int, device: str) -> float:
    cond = _cond(model, prompt)
    sync(device)
    t0 = time.perf_counter()
    if method == "generate":
        x_T = model.initial_noise([1000 * prompt + g for g in range(n)])
    else:
        try:  # an unreachable threshold: all candidates run all steps
            sail(model, f"p{prompt}", n, float("-inf"), alpha=0.05, loss=method.split("-")[1], budget=budget,
                 max_steps=sail_steps, fallback=False, max_rounds=1, cond=cond)
        except MitigationError:
            pass
        x_T = model.initial_noise([1000 * prompt + g for g in range(n)])  # stands in for the accepted x_T
    generate(model, x_T, cond.expand(n, -1, -1))
    sync(device)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    ap.add_argument("--arch", default="sd1,sd2" if cuda else "tiny", help="sd1, sd2, tiny or a pipeline folder")
    ap.add_argument("--methods", default="generate,sail-paper,sail-official")
    ap.add_argument("--n", type=int, default=4, help="images per prompt")
    ap.add_argument("--budget", type=int, default=8, help="SAIL candidates (App. D.2)")
    ap.add_argument("--sail-steps", type=int, default=10)
    ap.add_argument("--prompts", type=int, default=3, help="prompts timed per (arch, method) after one warm-up")
    ap.add_argument("--dtype", default="bfloat16" if cuda else "float32")
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "mitigation_cost.csv"))
    args = ap.parse_args(argv)
    log = BenchLog(
        args.out, ["arch", "method", "n", "budget", "sail_steps", "dtype", "s_per_prompt", "peak_gib"], args.device
    )
    for arch in args.arch.split(","):
        model = _model(arch, getattr(torch, args.dtype), args.device)
        for method in args.methods.split(","):
            time_prompt(model, method, args.n, args.budget, 1, 10_000, args.device)  # warm-up
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            try:
                secs = [time_prompt(model, method, args.n, args.budget, args.sail_steps, p, args.device)
                        for p in range(args.prompts)]
                spp = sum(secs) / len(secs)
                peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
            except torch.OutOfMemoryError:
                spp, peak = float("nan"), float("inf")
                torch.cuda.empty_cache()
            log.add(arch=Path(arch).name, method=method, n=args.n, budget=args.budget,
                    sail_steps=args.sail_steps if method != "generate" else 0, dtype=args.dtype,
                    s_per_prompt=f"{spp:.3g}", peak_gib=f"{peak:.3g}")
        del model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    log.markdown(log.cols[2:], ["arch", "method", "n", "budget", "SAIL steps", "dtype", "s/prompt", "peak GiB"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
