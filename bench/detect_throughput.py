"""Detection throughput (prompts/s) and peak GPU memory: Wen@1 and ours@1 by four routes.

Routes, each at n generations per prompt (step 1 of 50-step DDIM, guidance 7.5):
  wen            ‖ε_c − ε_u‖, batched, model dtype
  jvp-official   ‖H^Δ s^Δ‖² by JVP the official code's way: fp32, math attention, one prompt (n items) at a time
  jvp-batched    the same JVP over batches of prompts × n
  fd-batched     the §5.1 finite difference over batches, model dtype (bf16 on GPU), fast attention

Architectures: 'sd1' / 'sd2' are SD v1.4 / v2.0 (768-v) UNets built from their published configs with random
weights (timing only: the arithmetic is the same as trained weights'); 'tiny' is the tests' tiny pipeline.
On a GPU: ``python bench/detect_throughput.py --arch sd1,sd2``; on CPU it defaults to the tiny pipeline.
Appends one row per (arch, route, n) to bench/results/detect_throughput.csv with device and date.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from sharp_utils.detection import Batch, DetectOptions, ours_fd, ours_jvp, wen
from sharp_utils.pipeline import PipelineScoreModel
from sharp_utils.sampling import prompt_seed
from sharp_utils.pipeline import SD_SCHEDULER
from sharp_utils.tiny_sd import build_tiny_pipeline

# Published UNet configs (CompVis/stable-diffusion-v1-4, stabilityai/stable-diffusion-2 768-v), abridged to the
# fields that differ from UNet2DConditionModel's defaults.
SD1_UNET = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
SD2_UNET = dict(
    sample_size=96, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True
)
ARCH = {"sd1": (SD1_UNET, "epsilon", 77), "sd2": (SD2_UNET, "v_prediction", 77)}
ROUTES = ("wen", "jvp-official", "jvp-batched", "fd-batched")


def build_model(arch: str, dtype: torch.dtype, device: str, compile: bool = False) -> PipelineScoreModel:
    from diffusers import DDIMScheduler, UNet2DConditionModel

    if arch == "tiny":
        pipe = build_tiny_pipeline()
        pipe.to(device, dtype)
        m = PipelineScoreModel(pipe, "tiny")
    else:
        cfg, pred, L = ARCH[arch]
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**cfg).to(device, dtype).eval().requires_grad_(False)
        pipe = SimpleNamespace(unet=unet, scheduler=DDIMScheduler(prediction_type=pred, **SD_SCHEDULER))
        m = PipelineScoreModel(pipe, arch)
        m._uncond = torch.zeros(1, L, cfg["cross_attention_dim"], device=device, dtype=dtype)  # ∅'s embedding
    if compile:  # channels-last convolutions + inductor-fused GroupNorm/SiLU; not for the JVP routes
        m.unet = torch.compile(m.unet.to(memory_format=torch.channels_last))
    return m


def batches(model: PipelineScoreModel, n_prompts: int, n: int, per_batch: int, seed: int = 0):
    """Random text embeddings stand in for the encoder (its cost is one pass per prompt, not per step)."""
    L, D = model.uncond_embedding.shape[1:]
    items = [(p, g) for p in range(n_prompts) for g in range(n)]
    for i in range(0, len(items), per_batch):
        chunk = items[i:i + per_batch]
        seeds = [prompt_seed(seed, str(p), g) for p, g in chunk]
        gen = torch.Generator().manual_seed(i)
        cond = torch.randn(len(chunk), L, D, generator=gen).to(model.device, model.dtype)
        lengths = torch.full((len(chunk),), 10)
        yield Batch(model.initial_noise(seeds), cond, [str(p) for p, _ in chunk], lengths, lengths - 1)


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class BenchLog:
    """Rows stamped with date and device, appended to a CSV (header once) as they come; a markdown table at the end."""

    def __init__(self, out: str | Path, cols: list[str], device: str):
        self.out, self.cols = Path(out), ["date", "device"] + cols
        self.stamp = {"date": dt.date.today().isoformat(), "device": device_name(device)}
        self.out.parent.mkdir(parents=True, exist_ok=True)
        new = not self.out.exists()
        self._f = self.out.open("a", newline="")
        self._w = csv.DictWriter(self._f, self.cols)
        if new:
            self._w.writeheader()
        self.rows: list[dict] = []

    def add(self, **row) -> None:
        row = {**self.stamp, **row}
        self._w.writerow(row)
        self._f.flush()
        self.rows.append(row)
        print(row, flush=True)

    def markdown(self, cols: list[str], headers: list[str]) -> None:
        self._f.close()
        print(f"\n{self.stamp['device']}, {self.stamp['date']}\n\n| " + " | ".join(headers) + " |\n|"
              + "---|" * len(headers))
        for r in self.rows:
            print("| " + " | ".join(str(r[c]) for c in cols) + " |")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_route(model, route: str, n: int, n_prompts: int, prompts_per_batch: int, device: str) -> tuple[float, float]:
    fn = {"wen": wen, "jvp-official": ours_jvp, "jvp-batched": ours_jvp, "fd-batched": ours_fd}[route]
    per_batch = n if route == "jvp-official" else n * prompts_per_batch
    opts = DetectOptions()
    ctx = torch.autocast("cuda", dtype=torch.float32) if route == "jvp-official" and device.startswith("cuda") else None
    for b in batches(model, min(n_prompts, max(1, per_batch // n)), n, per_batch):  # warm-up
        fn(model, b, (1,), opts)
        break
    sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for b in batches(model, n_prompts, n, per_batch):
        if ctx is not None:
            with ctx:
                fn(model, b, (1,), opts)
        else:
            fn(model, b, (1,), opts)
    sync(device)
    secs = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return n_prompts / secs, peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    ap.add_argument("--arch", default="sd1,sd2" if cuda else "tiny")
    ap.add_argument("--n", default="1,4")
    ap.add_argument("--routes", default=",".join(ROUTES))
    ap.add_argument("--prompts", type=int, default=32 if cuda else 8, help="prompts timed per (route, n)")
    ap.add_argument("--prompts-per-batch", type=int, default=16)
    ap.add_argument("--fd-dtype", default="bfloat16" if cuda else "float32")
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet (wen and fd-batched routes only)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "detect_throughput.csv"))
    args = ap.parse_args(argv)
    log = BenchLog(
        args.out,
        ["arch", "route", "n", "dtype", "prompts_per_batch", "prompts_per_s", "peak_gib", "compiled"],
        args.device,
    )
    for arch in args.arch.split(","):
        for route in args.routes.split(","):
            dtype = getattr(torch, args.fd_dtype) if route in ("fd-batched", "wen") else torch.float32
            if args.compile and "jvp" in route:
                continue
            model = build_model(arch, dtype, args.device, args.compile)
            for n in (int(v) for v in args.n.split(",")):
                try:
                    pps, peak = time_route(model, route, n, args.prompts, args.prompts_per_batch, args.device)
                except torch.OutOfMemoryError:
                    pps, peak = float("nan"), float("inf")
                    torch.cuda.empty_cache()
                log.add(arch=arch, route=route, n=n, dtype=str(dtype).split(".")[-1],
                        prompts_per_batch=1 if route == "jvp-official" else args.prompts_per_batch,
                        prompts_per_s=f"{pps:.3g}", peak_gib=f"{peak:.3g}", compiled=int(args.compile))
            del model
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    log.markdown(["arch", "route", "n", "dtype", "prompts_per_s", "peak_gib"],
                 ["arch", "route", "n", "dtype", "prompts/s", "peak GiB"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
