"""Tip-Adapter (training-free; METHOD.md §5).

    keys   = n(mean of a shot's raw views)                       [S, C·K, D]  class-major (shot k of class c
                                                                              at c·K + k; padded shots: zero)
    Y      = one-hot classes of the keys, padded shots masked     [C·K, C]
    logits = τ q̄ T̄ᵀ + α · exp(−β (1 − q̄ keysᵀ)) Y

The product with Y is computed as a masked sum over each class's K keys (the keys are class-major), which
costs N·C·K instead of N·C·K·C.

(α, β) are chosen per seed on validation with bridge.search.batched_search: round 0 scores a regular grid
of `grid_points`² points over [alpha_low, alpha_high] × [beta_low, beta_high] plus Sobol points, then
`search_rounds` − 1 refinement rounds of `search_per_round` points. Tip-Adapter's paper searches a grid over
roughly α ∈ [0.1, 3…5] and β ∈ [0.1, 7…12] depending on the dataset; our default box [0, 10]² covers
those ranges for every dataset. Accuracy ties are broken by the mean true-class log-probability.
"""
from __future__ import annotations

import time

import torch
from torch import Tensor

from clipbridge.bridge.features import begin_fit, chunked, prepare_queries, shot_keys, validation
from clipbridge.bridge.fusion import FusionChoice, box_grid, scorer, search_fusion
from clipbridge.bridge.methods.zeroshot import zeroshot_logits
from clipbridge.bridge.registry import FittedState, register_method

SEARCH_DEFAULTS = {"alpha_low": 0.0, "alpha_high": 10.0, "beta_low": 0.0, "beta_high": 10.0, "grid_points": 11,
                   "search_rounds": 4, "search_per_round": 64}


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

    def candidate_logits(candidates: Tensor) -> Tensor:                          # [S, m, 2] -> [S, m, Nv, C]
        alpha, beta = candidates[..., 0], candidates[..., 1]
        return base.unsqueeze(1) + alpha[..., None, None] * cache_logits(val_q, keys, key_mask, beta)

    low, high = [hp["alpha_low"], hp["beta_low"]], [hp["alpha_high"], hp["beta_high"]]
    points = int(hp["grid_points"])
    grid = box_grid(low, high, [points, points], dtype=text.dtype)
    per_candidate = val_q.shape[0] * val_q.shape[1] * keys.shape[1]
    return search_fusion(scorer(candidate_logits, val_y, per_candidate), low, high, seeds=task.seeds,
                         rounds=int(hp["search_rounds"]),
                         per_round=int(hp["search_per_round"]), grid=grid, like=base)


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
    info = {"val_accuracy": choice.val_accuracy.tolist(), "fit_seconds": time.perf_counter() - start,
            "search_seconds": choice.seconds, "search_evaluated": choice.evaluated, **(extra_info or {})}
    return FittedState(name, tensors, chosen, info)


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
    defaults = dict(SEARCH_DEFAULTS)

    def fit(self, task, **hparams) -> FittedState:
        hp, start, dtype, text = begin_fit(self, task, hparams)
        keys = shot_keys(task, dtype)
        return tip_state(self.name, task, hp, text, keys.x, keys.mask.reshape(task.num_classes, -1), start)

    def logits(self, state: FittedState, queries: Tensor) -> Tensor:
        return tip_logits(state, queries)
