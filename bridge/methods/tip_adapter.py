"""Tip-Adapter (training-free; METHOD.md §5).

    keys   = n(mean of a shot's raw views)                       [S, C·K, D]  class-major (shot k of class c
                                                                              at c·K + k; padded shots: zero)
    Y      = one-hot classes of the keys, padded shots masked     [C·K, C]
    logits = τ q̄ T̄ᵀ + α · exp(−β (1 − q̄ keysᵀ)) Y

The product with Y is computed as a masked sum over each class's K keys (the keys are class-major), which
costs N·C·K instead of N·C·K·C.

(α, β) are chosen per seed on validation over the box [alpha_low, alpha_high] × [beta_low, beta_high] by
`search` (bridge.fusion):
  "grid"     (the paper recipe) the `grid_beta` × `grid_alpha` grid alone, β outer, α inner, the first strict
             maximum of validation top-1 accuracy, as the official search_hp; with grid_endpoint False the axes
             are the official ones, β_i = low + i·(high − low)/grid_beta, i < grid_beta, the same for α
             (RECIPES.md §2.2: the paper recipe sets the per-dataset box and 200 × 20 points);
  "batched"  (the default, the "uniform" recipe) bridge.search.batched_search: round 0 scores the grid plus
             `search_per_round` Sobol points, then `search_rounds` − 1 refinement rounds of
             `search_per_round` points each, accuracy ties broken by the mean true-class log-probability
             (scored only for the candidates whose order it decides); at least as accurate on validation as
             the best grid point. Default grid: 11 × 11 points over [0, 10]² with both ends.
Both score every candidate's hits with bridge.cache_search, which scores exactly only the (query, class) pairs
that can change a decision and counts what scoring every pair would count.
"""
from __future__ import annotations

import time

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.features import begin_fit, chunked, prepare_queries, shot_keys, validation
from clipbridge.bridge.cache_search import CacheFusion, CacheFusionScore
from clipbridge.bridge.fusion import SEARCH_MODES, FusionChoice, box_grid, first_best, search_fusion
from clipbridge.bridge.methods.zeroshot import zeroshot_logits
from clipbridge.bridge.registry import FittedState, register_method

SEARCH_DEFAULTS = {"search": "batched", "alpha_low": 0.0, "alpha_high": 10.0, "beta_low": 0.0, "beta_high": 10.0, "grid_alpha": 11,
                   "grid_beta": 11, "grid_endpoint": True, "search_rounds": 4, "search_per_round": 64}


def cache_logits(queries: Tensor, keys: Tensor, key_mask: Tensor, beta: Tensor) -> Tensor:
    """exp(−β (1 − q̄ keysᵀ)) Y for queries [S, N, D], class-major keys [S, C·K, D] with mask [C, K], and
    beta [S, B] -> [S, B, N, C] (one slice per β candidate)."""
    c, k = key_mask.shape
    affinity = queries @ keys.transpose(1, 2)                                     # [S, N, C·K]
    weights = torch.exp(-beta[:, :, None, None] * (1 - affinity.unsqueeze(1)))    # [S, B, N, C·K]
    weights = weights * key_mask.reshape(-1).to(weights.dtype)
    return weights.reshape(*weights.shape[:-1], c, k).sum(-1)


def search_alpha_beta(task, hp: dict, text: Tensor, keys: Tensor, key_mask: Tensor) -> FusionChoice:
    """(α, β) per seed maximising validation accuracy of Tip-Adapter's logits with these keys."""
    val_q, val_y = validation(task, text.dtype)
    base = zeroshot_logits(val_q, text, task.logit_scale)                        # [S, Nv, C]
    return fusion_search(hp, base, val_q, val_y, keys, key_mask, task.seeds)


def fusion_search(hp: dict, base: Tensor, val_q: Tensor, val_y: Tensor, keys: Tensor, key_mask: Tensor,
                  seeds: tuple[int, ...]) -> FusionChoice:
    """(α, β) per seed by hp["search"] (module docstring): zero-shot logits base [S, Nv, C] of the normalised
    validation queries val_q [S, Nv, D], labels val_y [S, Nv] (-1 = padding), class-major keys [S, C·K, D]
    with key_mask [C, K]. Returns best [S, 2] = (α, β)."""
    start = time.perf_counter()
    s = val_q.shape[0]
    problem = CacheFusion(base, val_y, lambda i, rows: val_q[i, rows] @ keys[i].transpose(0, 1),
                          key_mask.reshape(1, -1).to(base.dtype).expand(s, -1), None, "tip",
                          box=(hp["beta_low"], hp["beta_high"], hp["alpha_low"], hp["alpha_high"], 0.0, 0.0))
    low, high = [hp["alpha_low"], hp["beta_low"]], [hp["alpha_high"], hp["beta_high"]]
    beta_alpha = box_grid(low[::-1], high[::-1], [int(hp["grid_beta"]), int(hp["grid_alpha"])],
                          endpoint=bool(hp["grid_endpoint"]), dtype=base.dtype,
                          device=base.device)                                      # β outer, as the official loop
    score = CacheFusionScore(problem, beta=1, alpha=0)
    if hp["search"] == "grid":
        alpha_beta = beta_alpha.flip(-1)
        accuracy = score.primary(alpha_beta.unsqueeze(0).expand(s, -1, -1))           # [S, G]
        return first_best(accuracy, alpha_beta, start, scored_share=problem.scored[-1])
    if hp["search"] != "batched":
        raise BridgeInputError(f"search must be one of {list(SEARCH_MODES)}, got {hp['search']!r}")
    return search_fusion(score, low, high, seeds=seeds, rounds=int(hp["search_rounds"]),
                         per_round=int(hp["search_per_round"]), grid=beta_alpha.flip(-1), like=base)


def tip_state(name: str, task, hp: dict, text: Tensor, keys: Tensor, key_mask: Tensor, start: float,
              extra_hparams: list[dict] | None = None, extra_info: dict | None = None) -> FittedState:
    """Search (α, β) on validation for these keys and package the FittedState both Tip-Adapters share."""
    choice = search_alpha_beta(task, hp, text, keys, key_mask)
    alpha, beta = choice.best[:, 0], choice.best[:, 1]
    tensors = {"text": text, "keys": keys, "key_mask": key_mask, "alpha": alpha, "beta": beta,
               "logit_scale": torch.tensor(task.logit_scale, dtype=text.dtype, device=text.device)}
    extra_hparams = extra_hparams or [{} for _ in task.seeds]
    chosen = [{**hp, **more, "alpha": float(a), "beta": float(b)}
              for a, b, more in zip(alpha.tolist(), beta.tolist(), extra_hparams)]
    return FittedState(name, tensors, chosen, choice.fit_info(start, **(extra_info or {})))


def tip_logits(state: FittedState, queries: Tensor) -> Tensor:
    """τ q̄ T̄ᵀ + α exp(−β(1 − q̄ keysᵀ)) Y with the state's per-seed α, β: queries -> [S, N, C]."""
    t = state.tensors
    q = prepare_queries(queries, len(state.hparams), t["text"])

    def rows(part: Tensor) -> Tensor:
        cache = cache_logits(part, t["keys"], t["key_mask"], t["beta"].unsqueeze(1)).squeeze(1)
        return zeroshot_logits(part, t["text"], t["logit_scale"]) + t["alpha"][:, None, None] * cache

    return chunked(rows, q, q.shape[0] * t["keys"].shape[1])


@register_method
class TipAdapter:
    name = "tip-adapter"
    summary = "training-free cache of the shots' keys, fused with zero-shot; (alpha, beta) searched on validation"
    defaults = dict(SEARCH_DEFAULTS)
    rules = {"search": SEARCH_MODES}

    def fit(self, task, **hparams) -> FittedState:
        hp, start, dtype, text = begin_fit(self, task, hparams)
        keys = shot_keys(task, dtype)
        return tip_state(self.name, task, hp, text, keys.x, keys.mask.reshape(task.num_classes, -1), start)

    def logits(self, state: FittedState, queries: Tensor) -> Tensor:
        return tip_logits(state, queries)
