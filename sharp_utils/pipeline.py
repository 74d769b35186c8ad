"""Model adapter for diffusers Stable Diffusion pipelines (SD 1.x ε-prediction, SD 2.x v-prediction, MiniSD).

:func:`load_pipeline` loads any ``StableDiffusionPipeline`` folder or hub id and returns a
:class:`PipelineScoreModel`, which implements the score-function interface of
:mod:`sharp_utils.scores` with *text embeddings* as the condition: ``cond`` is a tensor (B, L, D) of
encoder hidden states, ``None`` means the empty prompt ∅ (classifier-free guidance's unconditional branch).

It also owns what only a diffusers model has: the tokenizer (prompt lengths, end-token positions), the
VAE decoder (final images), and cross-attention processors that record attention probabilities
(Ren et al. 2024; Chen et al. 2024) or rescale them (Ren et al.'s mitigation).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .sampling import prompt_seed  # noqa: F401  (re-exported: seeding lives with the sampler)
from .sampling import per_sample_noise
from .scores import ScoreModel

# App. D of Jeon et al. 2025: DDIM, 50 steps, guidance 7.5
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 7.5
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


# Stable Diffusion v1's noise schedule as diffusers' DDIM configuration (MiniSD and the tiny test pipelines use it)
SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")

class PipelineLoadError(RuntimeError):
    """A pipeline folder or hub id could not be loaded; the message names the fix."""


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is unknown: use one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def default_device() -> str:
    """cuda:LOCAL_RANK when CUDA is present (one process per GPU under accelerate/torchrun), else cpu."""
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


# ---------------------------------------------------------------- attention processors


@dataclass
class AttentionStore:
    """What :class:`CrossAttentionProcessor` records during conditional forward passes.

    ``token_means[i]`` is, for the i-th cross-attention call of the current forward pass (call order =
    the UNet's execution order), the attention probability of every token averaged over heads and
    query pixels, shape (B, L).  ``token_maps[i]`` holds, when ``map_tokens`` is set, the per-pixel
    attention to token ``map_tokens[b]`` averaged over heads, shape (B, Q).
    """

    record: bool = False
    map_tokens: Tensor | None = None
    map_layers: tuple[int, ...] = ()
    token_means: list[Tensor] = field(default_factory=list)
    token_maps: dict[int, Tensor] = field(default_factory=dict)
    # Ren et al.'s mitigation: multiply the first (beginning) token's logit by ``bos_scale`` and drop
    # the tokens flagged in ``token_mask`` (B, L) bool, True = masked out
    bos_scale: float = 1.0
    token_mask: Tensor | None = None
    rescale_active: bool = False  # set per UNet call: rescaling applies to conditional calls only

    def reset(self) -> None:
        self.token_means.clear()
        self.token_maps.clear()


class CrossAttentionProcessor:
    """A diffusers attention processor computing softmax(QKᵀ/√d) explicitly, so it can record and rescale it.

    Used only on cross-attention (``attn2``) layers; self-attention keeps the pipeline's fast processor.
    """

    def __init__(self, store: AttentionStore):
        self.store = store

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, *args, **kwargs) -> Tensor:
        store = self.store
        B = hidden_states.shape[0]
        if encoder_hidden_states is None:  # not a cross-attention call
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        v = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        logits = torch.bmm(q, k.transpose(-1, -2)) * attn.scale
        rescale = store.rescale_active
        if rescale and store.bos_scale != 1.0:
            scale = torch.ones(logits.shape[-1], dtype=logits.dtype, device=logits.device)
            scale[0] = store.bos_scale
            logits = logits * scale
        if rescale and store.token_mask is not None:
            mask = store.token_mask.to(logits.device).repeat_interleave(attn.heads, dim=0)[:, None, :]
            logits = logits.masked_fill(mask, float("-inf"))
        probs = logits.float().softmax(dim=-1).to(q.dtype)
        if store.record:
            p = probs.float().reshape(B, attn.heads, probs.shape[1], probs.shape[2])
            layer = len(store.token_means)
            store.token_means.append(p.mean(dim=(1, 2)).detach())
            if store.map_tokens is not None and layer in store.map_layers:
                idx = store.map_tokens.to(p.device).reshape(B, 1, 1, 1).expand(B, attn.heads, p.shape[2], 1)
                store.token_maps[layer] = p.gather(3, idx).squeeze(3).mean(1).detach()
        out = attn.batch_to_head_dim(torch.bmm(probs, v))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


# ---------------------------------------------------------------- the adapter


class PipelineScoreModel(ScoreModel):
    """Score-function interface over a diffusers ``StableDiffusionPipeline``; ``cond`` = text embeddings."""

    def __init__(self, pipe, name: str = ""):
        self.pipe = pipe
        self.name = name
        self.unet = pipe.unet
        cfg = pipe.scheduler.config
        self.prediction_type = cfg.get("prediction_type", "epsilon")
        self.steps_offset = int(cfg.get("steps_offset", 0))
        self.device = self.unet.device
        self.dtype = self.unet.dtype
        self.alphas_cumprod = pipe.scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.store = AttentionStore()
        self._cross_procs_installed = False
        self._uncond: Tensor | None = None
        self._recording_cond = False

    # -- text
    @property
    def max_tokens(self) -> int:
        return int(self.pipe.tokenizer.model_max_length)

    def token_lengths(self, prompts: list[str]) -> list[int]:
        """Number of tokens of each prompt including the begin and end tokens, before truncation."""
        ids = self.pipe.tokenizer(list(prompts), padding=False, truncation=False, verbose=False).input_ids
        return [len(i) for i in ids]

    def over_length(self, prompts: list[str]) -> list[str]:
        """The prompts the tokenizer will truncate (more than ``max_tokens`` tokens)."""
        return [p for p, n in zip(prompts, self.token_lengths(prompts)) if n > self.max_tokens]

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Tensor:
        """Text-encoder hidden states (B, L, D) of ``prompts`` (padded/truncated to the tokenizer's max length)."""
        tok = self.pipe.tokenizer(list(prompts), padding="max_length", max_length=self.max_tokens,
                                  truncation=True, return_tensors="pt")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            emb = self.pipe.text_encoder(tok.input_ids.to(self.pipe.text_encoder.device))[0]
        return emb.to(self.device, self.dtype)

    def end_token_index(self, prompts: list[str]) -> Tensor:
        """Position of the (first) end token of each prompt after truncation: Chen et al.'s 'bright ending'."""
        return torch.tensor([min(n, self.max_tokens) - 1 for n in self.token_lengths(prompts)])

    @property
    def uncond_embedding(self) -> Tensor:
        """Embedding of the empty prompt ∅, (1, L, D)."""
        if self._uncond is None:
            self._uncond = self.encode([""])
        return self._uncond

    # -- latents and images
    @property
    def latent_shape(self) -> tuple[int, int, int]:
        s = self.unet.config.sample_size
        h, w = (s, s) if isinstance(s, int) else tuple(s)
        return (int(self.unet.config.in_channels), int(h), int(w))

    def initial_noise(self, seeds) -> Tensor:
        """x_T ~ N(0, I) from one CPU ``torch.Generator`` per seed (device- and batch-independent)."""
        return per_sample_noise(seeds, self.latent_shape).to(self.device, self.dtype)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Latents → images in [0, 1], (B, 3, H, W) float32."""
        vae = self.pipe.vae
        img = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        return (img.float() / 2 + 0.5).clamp(0, 1)

    # -- the score-function interface
    def model_output(self, x: Tensor, t: int, cond: Any = None) -> Tensor:
        B = x.shape[0]
        self.store.record = self._recording_cond and cond is not None  # Ren/Chen record the conditional pass
        self.store.rescale_active = cond is not None
        if cond is None:
            cond = self.uncond_embedding.expand(B, -1, -1)
        elif cond.shape[0] != B:
            cond = cond.expand(B, -1, -1) if cond.shape[0] == 1 else cond.repeat_interleave(B // cond.shape[0], 0)
        tt = torch.full((B,), int(t), device=x.device, dtype=torch.long)
        out = self.unet(x, tt, encoder_hidden_states=cond.to(x.dtype)).sample
        self.store.record = False
        return out

    # -- cross attention
    def _install_cross_processors(self) -> None:
        if self._cross_procs_installed:
            return
        procs = {}
        for name, proc in self.unet.attn_processors.items():
            procs[name] = CrossAttentionProcessor(self.store) if ".attn2." in name else proc
        self.unet.set_attn_processor(procs)
        self._cross_procs_installed = True

    @property
    def num_cross_attention_layers(self) -> int:
        return sum(".attn2." in n for n in self.unet.attn_processors)

    @contextlib.contextmanager
    def recording(self, map_tokens: Tensor | None = None, map_layers: tuple[int, ...] = ()):
        """Record cross-attention probabilities of conditional UNet calls inside the block (see
        :class:`AttentionStore`)."""
        self._install_cross_processors()
        self.store.reset()
        self.store.map_tokens, self.store.map_layers = map_tokens, tuple(map_layers)
        self._recording_cond = True
        try:
            yield self.store
        finally:
            self._recording_cond = False
            self.store.record = False
            self.store.map_tokens, self.store.map_layers = None, ()

    @contextlib.contextmanager
    def attention_rescaling(self, bos_scale: float = 1.0, token_mask: Tensor | None = None):
        """Ren et al. 2024's mitigation inside the block: beginning-token logit × C, masked tokens dropped."""
        self._install_cross_processors()
        self.store.bos_scale, self.store.token_mask = float(bos_scale), token_mask
        try:
            yield
        finally:
            self.store.bos_scale, self.store.token_mask = 1.0, None


def quiet_libraries() -> None:
    """No per-component progress bars or info logs while loading (results and errors still print)."""
    import transformers.utils.logging as tlog

    # transformers first: importing diffusers already resolves transformers' image processors, whose
    # torchvision fallback warns once (SD's feature extractor is not used here)
    tlog.disable_progress_bar()
    tlog.set_verbosity_error()
    import diffusers.utils.logging as dlog

    dlog.disable_progress_bar()
    dlog.set_verbosity_error()


def load_pipeline(path_or_id: str | os.PathLike, dtype: str | torch.dtype = "float32", device: str | None = None,
                  scheduler: str = "ddim") -> PipelineScoreModel:
    """Load a diffusers Stable Diffusion pipeline (local folder or hub id) as a :class:`PipelineScoreModel`.

    The scheduler is replaced by ``DDIMScheduler`` built from the pipeline's own scheduler config
    (App. D of Jeon et al. 2025).  Honours ``HF_HUB_OFFLINE``.  Raises :class:`PipelineLoadError` naming
    the fix when weights are missing.
    """
    quiet_libraries()
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    if scheduler != "ddim":
        raise ValueError(f"scheduler {scheduler!r} is not supported: the paper's experiments use 'ddim'")
    torch_dtype = resolve_dtype(dtype)
    device = device or default_device()
    src = str(path_or_id)
    local = Path(src).expanduser()
    looks_local = local.exists() or src.startswith((".", "/", "~")) or os.sep in src and src.count("/") != 1
    if looks_local and not (local / "model_index.json").is_file():
        raise PipelineLoadError(
            f"{src}: no model_index.json there; pass a folder written by StableDiffusionPipeline.save_pretrained "
            "(e.g. a downloaded CompVis/stable-diffusion-v1-4 snapshot) or a hub id")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe = StableDiffusionPipeline.from_pretrained(
                str(local) if looks_local else src, torch_dtype=torch_dtype, safety_checker=None,
                requires_safety_checker=False, local_files_only=offline or looks_local)
    except (OSError, ValueError, EnvironmentError) as e:
        hint = ("download it first (huggingface-cli download " + src + " --local-dir DIR) and pass DIR"
                if not looks_local else "the folder is incomplete: re-save it with save_pretrained")
        raise PipelineLoadError(f"could not load pipeline {src!r} ({type(e).__name__}): {hint}") from e
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval().requires_grad_(False)
    return PipelineScoreModel(pipe, name=src)
