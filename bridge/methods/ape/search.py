"""Validation search of APE's (β, α, γ) and APE-T's (β, α): the official grid, or the project's batched search.

search="grid" (the paper recipe) is yangyangyang127/APE:main.py's grid (APE and APE-T alike):

    β_i = i·(scale_β − 0.1)/steps_β + 0.1    i = 0 … steps_β − 1
    α_j = j·(scale_α − 0.1)/steps_α + 0.1    j = 0 … steps_α − 1
    γ_m = m·scale_γ/steps_γ                  m = 0 … steps_γ − 1     (APE only; APE-T has no γ)

visited β outer, α, γ inner; the first candidate with the strictly highest validation top-1 accuracy wins
(bridge.fusion.first_best; the official loop starts from accuracy 0 and parameters (0, 0, 0), so when every
candidate scores 0 % it keeps (0, 0, 0); we keep the first grid point then). Every candidate's hits are those
of the exhaustive top-1 scoring, counted by bridge.cache_search: densely on small problems (the cache term once
per (β, γ), its 20 α at once), else scoring exactly only the (query, class) pairs that can change a decision
(from 100 classes on always by bridge.cache_screen's suspects and the open-query bound, cache_search.GRID_SCREEN_CLASSES).

search="batched" (the default, the uniform recipe) is bridge.search.batched_search through bridge.fusion.search_fusion over the box the grid
spans, [0.1, scale_β] × [0.1, scale_α] (× [0, scale_γ]): round 0 scores a regular grid of `grid_points` per
axis plus `search_per_round` Sobol points, then `search_rounds` − 1 rounds refine around the best; accuracy
ties go to the larger mean true-class log-probability (as in every search of the project).
"""
from __future__ import annotations

import time
from typing import Callable

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.cache_search import GRID_SCREEN_CLASSES, CacheFusion, CacheFusionScore, affinities_kept
from clipbridge.bridge.fusion import SEARCH_MODES, FusionChoice, box_grid, first_best, grid_axis, search_fusion
from clipbridge.bridge.methods.ape.cache import CacheModel


def official_axis(scale: float, steps: int, start: float) -> list[float]:
    """[i·(scale − start)/steps + start for i = 0 … steps − 1], in the official code's float operations."""
    return grid_axis(start, scale, int(steps), endpoint=False)


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
    affinity, base = validation_affinity(model, val_q, valid), model.zero_shot(val_q)      # (s, rows), [S,Nv,C]
    s = base.shape[0]
    like = dict(dtype=base.dtype, device=base.device)
    with_gamma = len(axes) == 3
    grid = torch.cartesian_prod(*[torch.tensor(axis, dtype=torch.float64) for axis in axes])
    grid = grid.reshape(-1, len(axes)).to(**like)                                        # β, α, γ order
    problem = cache_problem(model, base, val_y, affinity, with_gamma)
    problem.screen_classes = GRID_SCREEN_CLASSES         # the grid's close leaves: screened from 100 classes on
    cand = grid.unsqueeze(0).expand(s, -1, -1)
    hits = problem.top_hits(cand[..., 0], cand[..., 1],                # exact wherever it can be the first maximum
                            cand[..., 2] if with_gamma else torch.zeros_like(cand[..., 0]), keep=1)   # [S, G]
    accuracy = 100.0 * hits.to(base.dtype) / valid.sum(-1, keepdim=True).clamp_min(1).to(base.dtype)
    return first_best(accuracy, grid, start, scored_share=problem.scored[-1])


def validation_affinity(model: CacheModel, val_q: Tensor, valid: Tensor) -> Callable[[int, slice], Tensor]:
    """affinity(s, rows) -> [n, C·K] of the validation queries val_q [S, Nv, D] (valid [S, Nv]): sliced from the
    whole [S, Nv, C·K] computed once where bridge.cache_search keeps it (affinities_kept), else
    computed slice by slice when asked (ImageNet's 50,000 validation queries: 9.6 GB for 3 seeds at 16,000 keys)."""
    s, n = valid.shape
    if affinities_kept(s, n, model.keys.shape[1], val_q.element_size()):
        affinity = model.affinity(val_q, valid)
        return lambda i, rows: affinity[i, rows]
    return lambda i, rows: model.seed_affinity(val_q, valid, i, rows)


def cache_problem(model: CacheModel, base: Tensor, val_y: Tensor, affinity: Callable[[int, slice], Tensor],
                  with_gamma: bool) -> CacheFusion:
    """The bridge.cache_search problem of this cache model's logits on validation (affinity(s, rows), as
    validation_affinity gives it)."""
    return CacheFusion(base, val_y, affinity, model.weight, model.divergence if with_gamma else None, "ape")


def batched_parameter_search(model: CacheModel, val_q: Tensor, val_y: Tensor, hp: dict, seeds: tuple[int, ...],
                             with_gamma: bool) -> FusionChoice:
    """The project's batched search over the official grid's box (see the module docstring)."""
    valid = val_y >= 0
    affinity, base = validation_affinity(model, val_q, valid), model.zero_shot(val_q)
    low = [0.1, 0.1] + ([0.0] if with_gamma else [])
    high = [hp["beta_scale"], hp["alpha_scale"]] + ([hp["gamma_scale"]] if with_gamma else [])
    if any(h < lo for lo, h in zip(low, high)):
        raise BridgeInputError(f"APE's search scales must be >= their lower bounds {low}, got {high}")
    problem = cache_problem(model, base, val_y, affinity, with_gamma)
    problem.box = (low[0], high[0], low[1], high[1], low[2] if with_gamma else 0.0, high[2] if with_gamma else 0.0)
    points = int(hp["grid_points"])
    grid = box_grid(low, high, [points] * len(low), dtype=base.dtype)
    score = CacheFusionScore(problem, beta=0, alpha=1, gamma=2 if with_gamma else None)
    return search_fusion(score, low, high, seeds=seeds, rounds=int(hp["search_rounds"]),
                         per_round=int(hp["search_per_round"]), grid=grid, like=base)


def search_parameters(model: CacheModel, val_q: Tensor, val_y: Tensor, hp: dict, seeds: tuple[int, ...],
                      with_gamma: bool, method: str) -> FusionChoice:
    """(β, α[, γ]) per seed on validation with hp["search"] = "grid" or "batched"; best [S, 2 or 3]."""
    if hp["search"] == "grid":
        return grid_search(model, val_q, val_y, official_axes(hp, with_gamma))
    if hp["search"] == "batched":
        return batched_parameter_search(model, val_q, val_y, hp, seeds, with_gamma)
    raise BridgeInputError(f"{method}: search must be one of {list(SEARCH_MODES)}, got {hp['search']!r}")
