"""Validation search of APE's (β, α, γ) and APE-T's (β, α): the official grid, or the project's batched search.

search="grid" is yangyangyang127/APE:main.py's grid (APE and APE-T alike):

    β_i = i·(scale_β − 0.1)/steps_β + 0.1    i = 0 … steps_β − 1
    α_j = j·(scale_α − 0.1)/steps_α + 0.1    j = 0 … steps_α − 1
    γ_m = m·scale_γ/steps_γ                  m = 0 … steps_γ − 1     (APE only; APE-T has no γ)

visited β outer, α, γ inner; the first candidate with the strictly highest validation top-1 accuracy wins
(the official loop starts from accuracy 0 and parameters (0, 0, 0), so when every candidate scores 0 % it
keeps (0, 0, 0); we keep the first grid point then). Every candidate is scored exactly, in tensor
operations: per β, the cache logits of all γ at once ([S, G, Nv, C]); α only scales them, so each query is
right on one interval of α, found in one pass (AlphaMargins), and the hits of all α follow from it.

search="batched" is bridge.search.batched_search through bridge.fusion.search_fusion over the box the grid
spans, [0.1, scale_β] × [0.1, scale_α] (× [0, scale_γ]): round 0 scores a regular grid of `grid_points` per
axis plus `search_per_round` Sobol points, then `search_rounds` − 1 rounds refine around the best; accuracy
ties go to the larger mean true-class log-probability (as in every search of the project).
"""
from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.features import chunked
from clipbridge.bridge.fusion import FusionChoice, box_grid, scorer, search_fusion
from clipbridge.bridge.methods.ape.cache import CacheModel, key_scales, scaled_cache_logits

SEARCH_MODES = ("batched", "grid")


def official_axis(scale: float, steps: int, start: float) -> list[float]:
    """[i·(scale − start)/steps + start for i = 0 … steps − 1], in the official code's float operations."""
    return [i * (scale - start) / steps + start for i in range(int(steps))]


def official_axes(hp: dict, with_gamma: bool) -> list[list[float]]:
    """The official β, α (and γ) lists of a hyper-parameter dict (beta_scale, beta_steps, ...)."""
    axes = [official_axis(hp["beta_scale"], hp["beta_steps"], 0.1),
            official_axis(hp["alpha_scale"], hp["alpha_steps"], 0.1)]
    return axes + [official_axis(hp["gamma_scale"], hp["gamma_steps"], 0.0)] if with_gamma else axes


def grid_search(model: CacheModel, val_q: Tensor, val_y: Tensor, axes: list[list[float]]) -> FusionChoice:
    """Exact official grid search: axes = [βs, αs] or [βs, αs, γs]; val_q [S, Nv, D] normalised, val_y
    [S, Nv] (-1 = padding). Returns best [S, len(axes)] and the val accuracy (percent) of each seed."""
    start = time.perf_counter()
    if any(len(axis) == 0 for axis in axes):
        raise BridgeInputError("APE's grid search needs at least one step per parameter")
    valid = val_y >= 0
    affinity, base = model.affinity(val_q, valid), model.zero_shot(val_q)                 # [S,Nv,C·K], [S,Nv,C]
    s, nv, c = base.shape
    like = dict(dtype=base.dtype, device=base.device)
    gammas = torch.tensor(axes[2] if len(axes) == 3 else [0.0], **like).expand(s, -1)     # [S, G]
    alphas = torch.tensor(axes[1], **like)
    g = gammas.shape[1]
    scales = key_scales(model.weight, model.divergence, gammas).reshape(s, g, c, -1)     # [S, G, C, K]
    margin = AlphaMargins(base, val_y)
    counts = []
    for beta in axes[0]:
        weights = torch.exp(beta * affinity - beta).reshape(s, nv, c, -1)                 # [S, Nv, C, K]
        cache = torch.einsum("snck,sgck->sgnc", weights, scales)                          # [S, G, Nv, C]
        counts.append(chunked(lambda part: margin.hits(part, alphas), cache, nv * c * s, dim=1))   # [S, G, A]
    flat = torch.stack(counts, 1).transpose(2, 3).reshape(s, -1)                         # β, α, γ order
    first_best = flat.argmax(-1)                                                         # first maximum
    grid = torch.cartesian_prod(*[torch.tensor(axis, dtype=torch.float64) for axis in axes])
    grid = grid.reshape(-1, len(axes)).to(**like)
    accuracy = 100.0 * flat.gather(1, first_best[:, None]).squeeze(1).to(base.dtype) \
        / valid.sum(-1).clamp_min(1).to(base.dtype)
    return FusionChoice(best=grid[first_best], val_accuracy=accuracy, evaluated=flat.shape[1],
                        seconds=time.perf_counter() - start)


class AlphaMargins:
    """Top-1 hits of logits = base + α·cache for many α at once, from the interval of α where each query is
    right (one pass over [.., Nv, C] instead of one per α).

    Query n with label y is right iff for every class c ≠ y:  (b_y − b_c) + α (A_y − A_c) > 0, i.e.
    α > r_c where A_y > A_c, α < r_c where A_y < A_c (r_c = −(b_y − b_c)/(A_y − A_c)), and b_y > b_c where
    A_y = A_c. So it is right exactly for α in (lo, hi), lo = max of the lower bounds, hi = min of the upper
    ones. This equals argmax(base + α·cache) == y except at exact ties (where argmax takes the first class)
    and within rounding of a boundary; tests check it against the direct argmax.
    """

    def __init__(self, base: Tensor, labels: Tensor):
        self.valid = labels >= 0                                                         # [S, Nv]
        self.y = labels.clamp_min(0).unsqueeze(-1)
        margin = base.gather(-1, self.y) - base                                          # b_y − b_c [S, Nv, C]
        self.margin = margin.scatter(-1, self.y, float("inf"))   # c = y: never a bound, always satisfied

    def hits(self, cache: Tensor, alphas: Tensor) -> Tensor:
        """Number of right validation queries [S, G, A] for cache [S, G, Nv, C] and alphas [A]."""
        gain = cache.gather(-1, self.y.unsqueeze(1).expand(*cache.shape[:-1], 1)) - cache   # A_y − A_c
        margin = self.margin.unsqueeze(1)
        ratio = -margin / gain                                        # inf/nan where gain = 0: masked below
        lo = torch.where(gain > 0, ratio, -math.inf).amax(-1)                             # [S, G, Nv]
        hi = torch.where(gain < 0, ratio, math.inf).amin(-1)
        ok = ((gain != 0) | (margin > 0)).all(-1) & self.valid.unsqueeze(1)
        right = ok.unsqueeze(-1) & (lo.unsqueeze(-1) < alphas) & (alphas < hi.unsqueeze(-1))
        return right.sum(-2)


def batched_parameter_search(model: CacheModel, val_q: Tensor, val_y: Tensor, hp: dict, seeds: tuple[int, ...],
                             with_gamma: bool) -> FusionChoice:
    """The project's batched search over the official grid's box (see the module docstring)."""
    valid = val_y >= 0
    affinity, base = model.affinity(val_q, valid), model.zero_shot(val_q)
    c = base.shape[-1]

    def candidate_logits(candidates: Tensor) -> Tensor:                                  # [S, m, p] -> [S, m, Nv, C]
        beta, alpha = candidates[..., 0], candidates[..., 1]
        gamma = candidates[..., 2] if with_gamma else torch.zeros_like(beta)
        cache = scaled_cache_logits(affinity, key_scales(model.weight, model.divergence, gamma), beta, c)
        return base.unsqueeze(1) + alpha[..., None, None] * cache

    low = [0.1, 0.1] + ([0.0] if with_gamma else [])
    high = [hp["beta_scale"], hp["alpha_scale"]] + ([hp["gamma_scale"]] if with_gamma else [])
    if any(h < lo for lo, h in zip(low, high)):
        raise BridgeInputError(f"APE's search scales must be >= their lower bounds {low}, got {high}")
    points = int(hp["grid_points"])
    grid = box_grid(low, high, [points] * len(low), dtype=base.dtype)
    per_candidate = affinity.shape[0] * affinity.shape[1] * affinity.shape[2]
    return search_fusion(scorer(candidate_logits, val_y, per_candidate), low, high, seeds=seeds,
                         rounds=int(hp["search_rounds"]), per_round=int(hp["search_per_round"]), grid=grid,
                         like=base)


def search_parameters(model: CacheModel, val_q: Tensor, val_y: Tensor, hp: dict, seeds: tuple[int, ...],
                      with_gamma: bool, method: str) -> FusionChoice:
    """(β, α[, γ]) per seed on validation with hp["search"] = "grid" or "batched"; best [S, 2 or 3]."""
    if hp["search"] == "grid":
        return grid_search(model, val_q, val_y, official_axes(hp, with_gamma))
    if hp["search"] == "batched":
        return batched_parameter_search(model, val_q, val_y, hp, seeds, with_gamma)
    raise BridgeInputError(f"{method}: search must be one of {list(SEARCH_MODES)}, got {hp['search']!r}")
