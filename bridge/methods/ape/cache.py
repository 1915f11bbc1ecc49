"""The cache model shared by APE and APE-T, its per-key divergence and its logits.

    logits = τ q̄ textᵀ + α · Σ_{keys i of class c} exp(β·a_i − β) · weight_i · exp(γ·d_i)

a_i is the affinity of the query to key i: APE uses the kept channels, a_i = n(q̄[kept])·keys'_i with
keys'_i = n(key_i[kept]); APE-T uses every channel, a_i = q̄·K̃_i, without re-normalising (RECIPES.md §2.3).
exp(β·a − β) is written as the official code writes exp(−(β − β·a)), so the float64 values agree bit for bit
up to the matrix products. The per-class sum over a class's keys stands for the product with the one-hot
value matrix L (keys are class-major), which costs N·C·K instead of N·C·K·C.

APE's divergence of key i with class y_i (keys' and text' re-normalised on the kept channels):

    p_i = softmax over classes of keys'_i · text'ᵀ      (no temperature)
    d_i = log2((1 + 1e-6) / (p_{i, y_i} + 1e-6))         (the KL term of the one-hot value row)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from clipbridge.bridge.features import chunked, prepare_queries
from clipbridge.bridge.methods.ape.channels import refine


def key_divergence(keys: Tensor, text: Tensor, labels: Tensor) -> Tensor:
    """d [S, C·K] from refined keys [S, C·K, k] and refined class text [S, C, k] (rows normalised), key
    labels [C·K]. Padded (zero) keys get a finite value; their weight is zero."""
    p = torch.softmax(keys @ text.transpose(1, 2), dim=-1)                               # [S, C·K, C]
    own = p.gather(-1, labels.view(1, -1, 1).expand(p.shape[0], -1, 1)).squeeze(-1)
    return torch.log2((1 + 1e-6) / (own + 1e-6))


def scaled_cache_logits(affinity: Tensor, key_scale: Tensor, beta: Tensor, num_classes: int) -> Tensor:
    """Σ_{i of class c} exp(β·a_i − β) · key_scale_i for affinity [S, N, C·K] (class-major keys), per-candidate
    key scales [S, B, C·K] (weight · exp(γ·d)) and beta [S, B] -> [S, B, N, C]."""
    b = beta[:, :, None, None]
    weights = torch.exp(b * affinity.unsqueeze(1) - b) * key_scale.unsqueeze(2)         # [S, B, N, C·K]
    return weights.reshape(*weights.shape[:-1], num_classes, -1).sum(-1)


def key_scales(weight: Tensor, divergence: Tensor, gamma: Tensor) -> Tensor:
    """weight · exp(γ·d): weight, divergence [S, C·K], gamma [S, B] -> [S, B, C·K]."""
    return weight.unsqueeze(1) * torch.exp(divergence.unsqueeze(1) * gamma.unsqueeze(-1))


@dataclass(frozen=True)
class CacheModel:
    """APE's (or APE-T's) fitted cache for S seeds.

    text        [C, D] or [S, C, D] zero-shot classifier rows (T̄; APE-T: T̄ plus its residual)
    keys        [S, C·K, D'] class-major cache keys (APE: n(key[kept]), D' = k; APE-T: K̃, D' = D)
    weight      [S, C·K] value weight of each key (0 for padded keys; APE-T: its trained weights)
    divergence  [S, C·K] d_i (zeros for APE-T, which has no γ term)
    channels    [S, k] the query channels the keys live on (APE), or None for all channels unnormalised (APE-T)
    logit_scale τ, a 0-d tensor
    """

    text: Tensor
    keys: Tensor
    weight: Tensor
    divergence: Tensor
    channels: Tensor | None
    logit_scale: Tensor

    @property
    def num_classes(self) -> int:
        return self.text.shape[-2]

    def tensors(self) -> dict[str, Tensor]:
        """The named tensors of a FittedState (channels only when present)."""
        out = {"text": self.text, "keys": self.keys, "weight": self.weight, "divergence": self.divergence,
               "logit_scale": self.logit_scale}
        return out if self.channels is None else {**out, "channels": self.channels}

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor]) -> "CacheModel":
        return cls(t["text"], t["keys"], t["weight"], t["divergence"], t.get("channels"), t["logit_scale"])

    def zero_shot(self, queries: Tensor) -> Tensor:
        """τ q̄ textᵀ for normalised queries [S, N, D] -> [S, N, C]."""
        return self.logit_scale * queries @ self.text.transpose(-1, -2)

    def affinity(self, queries: Tensor, valid: Tensor | None = None) -> Tensor:
        """a [S, N, C·K] of normalised queries [S, N, D] (rows where `valid` [S, N] is False: padding)."""
        if self.channels is not None:
            ok = torch.ones((), dtype=torch.bool, device=queries.device) if valid is None else valid
            queries = refine(queries, self.channels, ok, "queries")
        return queries @ self.keys.transpose(1, 2)

    def seed_affinity(self, queries: Tensor, valid: Tensor, s: int, rows: slice) -> Tensor:
        """affinity(queries, valid)[s, rows] [n, C·K] alone, for normalised queries [S, N, D] and valid [S, N]: the
        same row-wise refinement, one seed's product."""
        q = queries[s:s + 1, rows]
        if self.channels is not None:
            q = refine(q, self.channels[s:s + 1], valid[s:s + 1, rows], "queries")
        return (q @ self.keys[s:s + 1].transpose(1, 2))[0]

    def logits(self, queries: Tensor, beta: Tensor, alpha: Tensor, gamma: Tensor) -> Tensor:
        """Logits [S, N, C] of normalised queries [S, N, D] with per-seed β, α, γ [S]."""
        scales = key_scales(self.weight, self.divergence, gamma.unsqueeze(1))
        cache = scaled_cache_logits(self.affinity(queries), scales, beta.unsqueeze(1), self.num_classes).squeeze(1)
        return self.zero_shot(queries) + alpha[:, None, None] * cache


def model_logits(tensors: dict[str, Tensor], num_seeds: int, queries: Tensor) -> Tensor:
    """The `logits` of a FittedState of APE or APE-T: raw queries [N, D] or [S, N, D] -> [S, N, C]."""
    model = CacheModel.from_tensors(tensors)
    q = prepare_queries(queries, num_seeds, model.keys, dim=model.text.shape[-1])
    t = tensors
    return chunked(lambda part: model.logits(part, t["beta"], t["alpha"], t["gamma"]), q,
                   q.shape[0] * model.keys.shape[1])
