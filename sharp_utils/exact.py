"""The ideal model of a training set: the exact diffused density of its examples, as a :class:`ScoreModel`.

For training points z_i (pixels or latents) with weights w_i, forward diffusion gives the mixture
p_t(x) = Σ_i w_i N(x; √ᾱ_t z_i, σ_t² I), σ_t² = 1 − ᾱ_t.  With the posterior π_i(x) ∝ w_i N(x; √ᾱ z_i, σ² I):

* score s(x) = (√ᾱ E_π[z] − x)/σ², ε(x) = −σ s(x) = (x − √ᾱ E_π[z])/σ;
* Hessian H(x) = ∇s(x) = −I/σ² + ᾱ Cov_π[z]/σ⁴ (symmetric; −I/σ² is the sharpest any density can be at t).

A network trained to optimality on the training set is this model, so it separates what the paper claims
(sharpness of memorized densities, §4) from what a stand-in's data and a learned network add.  Conditions are
keys of ``conditions`` (a caption, a class label; ``None`` = unconditional pool), each a set of training
examples with weights; ``cond`` may be one key or one key per batch row.
"""
from __future__ import annotations

from typing import Any, Hashable

import torch
from torch import Tensor

from .scores import ScoreModel


class ExactDensityModel(ScoreModel):
    """Exact ε-predictor of a VP diffusion whose data distribution is a weighted set of training points.

    ``data``: (N, *shape) training points; ``conditions``: {key: (indices into ``data``, weights or None)}; the key
    ``None`` is the unconditional pool.  Computed in ``dtype`` (float64 by default), in chunks of ``chunk``
    training points; rows whose conditions hold at most ``small`` examples share one padded batch.  The result
    has the input's dtype.
    """

    def __init__(self, data: Tensor, conditions: dict[Hashable, tuple[Any, Any]], alphas_cumprod: Tensor,
                 dtype: torch.dtype = torch.float64, chunk: int = 8192, small: int = 256):
        if None not in conditions:
            raise ValueError("conditions needs the key None (the unconditional pool)")
        self.dtype = dtype
        self.shape = tuple(data.shape[1:])
        self.data = data.reshape(data.shape[0], -1).to(dtype)
        self.sqnorm = self.data.pow(2).sum(1)
        self.alphas_cumprod = alphas_cumprod
        self.chunk = int(chunk)
        self.small = int(small)  # conditions with at most this many examples are batched together, padded
        self.conditions: dict[Hashable, tuple[Tensor, Tensor]] = {}
        self._gathered: dict[Hashable, tuple[Tensor, Tensor]] = {}
        for key, (idx, w) in conditions.items():
            idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
            if idx.numel() == 0:
                raise ValueError(f"condition {key!r} has no training examples")
            w = torch.ones(idx.numel(), dtype=dtype) if w is None else torch.as_tensor(w, dtype=dtype).reshape(-1)
            if w.shape != idx.shape or (w <= 0).any():
                raise ValueError(f"condition {key!r}: give one positive weight per training example")
            self.conditions[key] = (idx, torch.log(w / w.sum()))

    def _keys(self, cond: Any, batch: int) -> list[Hashable]:
        """One condition key per batch row."""
        if isinstance(cond, Tensor):
            cond = cond.tolist() if cond.ndim else cond.item()
        keys = list(cond) if isinstance(cond, (list, tuple)) else [cond] * batch
        if len(keys) != batch:
            raise ValueError(f"{len(keys)} conditions for a batch of {batch}: give one key, or one per row")
        missing = sorted({repr(k) for k in keys if k not in self.conditions})
        if missing:
            raise KeyError(f"conditions {', '.join(missing[:5])} are not in this exact model: build it with them")
        return keys

    def _rows(self, key: Hashable) -> tuple[Tensor, Tensor]:
        """(z, ‖z‖²) of condition ``key``'s training examples, gathered once (a pool is read at every step)."""
        if key not in self._gathered:
            idx = self.conditions[key][0]
            self._gathered[key] = (self.data[idx], self.sqnorm[idx])
        return self._gathered[key]

    def posterior(self, x: Tensor, t: int, key: Hashable) -> tuple[Tensor, Tensor]:
        """(indices, π) with π (B, M) the posterior over condition ``key``'s training examples given x_t = ``x``."""
        idx, logw = self.conditions[key]
        z, sq = self._rows(key)
        a = self.alpha_bar(t).to(self.dtype)
        s2 = 1 - a
        xf = x.reshape(x.shape[0], -1).to(self.dtype)
        logits = []
        for lo in range(0, idx.numel(), self.chunk):
            sl = slice(lo, lo + self.chunk)
            # −‖x − √ᾱ z‖²/(2σ²) up to the x-only term ‖x‖², which the softmax cancels
            logits.append(logw[sl] + (torch.sqrt(a) * xf @ z[sl].T - a * sq[sl] / 2) / s2)
        return idx, torch.softmax(torch.cat(logits, 1), dim=1)

    def posterior_mean(self, x: Tensor, t: int, key: Hashable) -> Tensor:
        """E_π[z | x_t] (B, d) over condition ``key``'s training examples."""
        idx, pi = self.posterior(x, t, key)
        z, _ = self._rows(key)
        return sum(pi[:, lo: lo + self.chunk] @ z[lo: lo + self.chunk] for lo in range(0, idx.numel(), self.chunk))

    def _small_posterior_mean(self, x: Tensor, t: int, keys: list[Hashable]) -> Tensor:
        """E_π[z | x_t] for rows whose conditions have few examples: one padded batch instead of a loop over keys."""
        uniq = list(dict.fromkeys(keys))
        m_max = max(self.conditions[k][0].numel() for k in uniq)
        idx = torch.zeros(len(uniq), m_max, dtype=torch.long)
        logw = torch.full((len(uniq), m_max), -torch.inf, dtype=self.dtype)
        for j, k in enumerate(uniq):
            i, lw = self.conditions[k]
            idx[j, : i.numel()], logw[j, : i.numel()] = i, lw
        row = torch.tensor([uniq.index(k) for k in keys])
        a = self.alpha_bar(t).to(self.dtype)
        z = self.data[idx[row]]  # (B, M, d)
        xf = x.reshape(x.shape[0], -1).to(self.dtype)
        logits = logw[row] + (torch.sqrt(a) * torch.einsum("bd,bmd->bm", xf, z) - a * self.sqnorm[idx[row]] / 2) / (
            1 - a
        )
        return torch.einsum("bm,bmd->bd", torch.softmax(logits, dim=1), z)

    def model_output(self, x: Tensor, t: int, cond: Any = None) -> Tensor:
        keys = self._keys(cond, x.shape[0])
        a = self.alpha_bar(t).to(self.dtype)
        xf = x.reshape(x.shape[0], -1).to(self.dtype)
        # conditions with many examples (the unconditional pool) one at a time, the rest in one padded batch
        big = {k for k in keys if self.conditions[k][0].numel() > self.small}
        order, parts = [], []
        for key in dict.fromkeys(k for k in keys if k in big):
            sel = [i for i, k in enumerate(keys) if k == key]
            order += sel
            parts.append(self.posterior_mean(x[sel], t, key))
        sel = [i for i, k in enumerate(keys) if k not in big]
        if sel:
            order += sel
            parts.append(self._small_posterior_mean(x[sel], t, [keys[i] for i in sel]))
        m = torch.cat(parts)
        if len(parts) > 1:  # rows back in their order
            m = m[torch.argsort(torch.tensor(order))]
        eps = (xf - torch.sqrt(a) * m) / torch.sqrt(1 - a)
        return eps.to(x.dtype).reshape(x.shape)

    def exact_hessian(self, x: Tensor, t: int, cond: Any = None) -> Tensor:
        """H(x_t, c) = −I/σ² + ᾱ Cov_π[z]/σ⁴ per row, (B, d, d) in ``dtype``."""
        keys = self._keys(cond, x.shape[0])
        a = self.alpha_bar(t).to(self.dtype)
        s2 = 1 - a
        d = self.data.shape[1]
        out = torch.empty(x.shape[0], d, d, dtype=self.dtype)
        for b, key in enumerate(keys):
            idx, pi = self.posterior(x[b: b + 1], t, key)
            z = self.data[idx]
            m = pi[0] @ z
            zc = (z - m) * pi[0].sqrt()[:, None]
            out[b] = a * (zc.T @ zc) / s2 ** 2 - torch.eye(d, dtype=self.dtype) / s2
        return out
