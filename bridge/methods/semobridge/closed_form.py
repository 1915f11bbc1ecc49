"""SeMoBridge, training-free (METHOD.md §2): bridge B0 = pinv(Wt), three cosine maps, divergence class
weights, and a 7-parameter blend chosen on the validation queries by bridge.search.batched_search.

Hyper-parameters (`defaults`):
  search_rounds     rounds of the blend search (round 0: grid + Sobol points; then shrinking boxes)
  search_per_round  candidates per round and seed, all scored in one batched call
  views_used        views per shot to use from the support (0 = all V; 1 = the plain view only, ...)
The blend search maximises validation top-1; ties are broken by the mean validation margin
log(logit_true / best wrong logit) (see bridge.methods.semobridge.blend_front.front_scores), then by evaluation order
(the paper's fixed blend is evaluated first). Candidates are scored on each query's Pareto-undominated
classes only, which is exact and several times cheaper (bridge.methods.semobridge.blend_front); info
"search_scored_share" is the share of (query, class) pairs scored per candidate.

Both variants need the task's EOS features and Wt (`needs = {"eos"}`) and refuse a task without them in one
line. With an affine text projection (task.text_projection_bias, SigLIP) the bridge inverts t = e Wt + b
(algebra's docstring); the fitted state then also holds "projection_bias" [D] and "eos_length" ℓ.
"""
from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from clipbridge.bridge.methods.semobridge import algebra as sm
from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.features import work_dtype
from clipbridge.bridge.ops import accuracy, as_seed_batch
from clipbridge.bridge.registry import FittedState, check_hparams, register_method, require_inputs
from clipbridge.bridge.search import batched_search
from clipbridge.bridge.methods.semobridge.blend_front import front_scores, validation_front
from clipbridge.bridge.task import EOS
from clipbridge.bridge.text import ClassText, class_text

SEARCH_DEFAULTS = {"search_rounds": 8, "search_per_round": 192}
SEARCH_FINAL_RADIUS = 0.01   # last rounds refine within ±1% of each range
# Evaluated first in the search: the paper's fixed blend, zero-shot only, few-shot maps only.
BLEND_GRID = (sm.FIXED_BLEND, (0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0), (0.0, 1.0, 1.0, 1.0, 0.0, 0.5, 0.5))


def bridge_inputs(method, task, views_used: int) -> tuple[torch.dtype, ClassText, sm.WeightedViews]:
    """What both SeMoBridge variants start from: the working dtype, the class text (T̄ [C, D], Ē [C, W]) and
    the support views (bridge.methods.semobridge.algebra.WeightedViews) of the first `views_used` views of each
    shot; refuses (one line) a task without the EOS features `method` needs."""
    require_inputs(method, task)
    dtype = work_dtype(task)
    support, mask = select_views(task, views_used)
    return dtype, class_text(task, dtype), sm.weighted_views(support.to(dtype), mask)


def select_views(task, views_used: int) -> tuple[Tensor, Tensor]:
    """Support [S, C, K·v, D] and mask [C, K·v] restricted to the first `views_used` views of every shot."""
    v = task.views
    if views_used < 0 or views_used > v:
        raise BridgeInputError(f"views_used must be in [0, {v}] (0 = all), got {views_used}")
    if views_used in (0, v):
        return task.support, task.support_mask
    s, c, kv, d = task.support.shape
    support = task.support.reshape(s, c, kv // v, v, d)[:, :, :, :views_used].reshape(s, c, -1, d)
    mask = task.support_mask.reshape(c, kv // v, v)[:, :, :views_used].reshape(c, -1)
    return support, mask


def task_affine(task, text: ClassText) -> sm.AffineHead | None:
    """The AffineHead of the task's text projection in the text's dtype (None: linear, b absent or zero)."""
    return sm.affine_head(task.text_projection.to(text.projected.dtype), task.text_projection_bias,
                          text.eos_length)


def validation_maps(task, text: ClassText, image_protos: Tensor, bridged_protos: Tensor, bridge: Tensor,
                    dtype: torch.dtype, affine: sm.AffineHead | None = None) -> tuple[sm.Maps, Tensor]:
    """Cosine maps [S, Nv, C] of the task's validation queries and their labels [S, Nv]."""
    s = task.num_seeds
    val = task.val.to(dtype).expand(s, -1, -1)
    maps = sm.cosine_maps(val, text.projected, image_protos, bridged_protos, bridge, task.text_projection.to(dtype),
                          affine)
    return maps, task.val_labels.expand(s, -1)


def fit_blend(task, text: ClassText, views: sm.WeightedViews, bridge: Tensor, bias: Tensor | None,
              hp: dict[str, Any], method: str, started: float, info: dict[str, Any] | None = None,
              prototype_source: tuple[Tensor, Tensor | None] | None = None) -> FittedState:
    """Prototypes of `bridge` [D, W] | [S, D, W] (+ class bias [S, C, W]), blend search on validation,
    and the FittedState that `blend_state_logits` evaluates.

    prototype_source  (bridge, bias) to compute the bridged prototypes P from instead of (bridge, bias):
                      only for reproducing the authors' stale-prototype behaviour.
    """
    dtype = text.projected.dtype
    wt = task.text_projection.to(dtype)
    affine = task_affine(task, text)
    c = task.num_classes
    image_protos = sm.image_prototypes(views, c)
    proto_bridge, proto_bias = prototype_source or (bridge, bias)
    bridged_protos = sm.bridged_prototypes(views, c, proto_bridge, wt, proto_bias, affine)
    div = sm.divergence(image_protos, text.projected)
    maps, labels = validation_maps(task, text, image_protos, bridged_protos, bridge, dtype, affine)

    search_start = time.perf_counter()
    low = torch.tensor(sm.BLEND_LOW, dtype=dtype, device=text.projected.device)
    high = torch.tensor(sm.BLEND_HIGH, dtype=dtype, device=low.device)
    front = validation_front(maps, div, labels)
    result = batched_search(lambda cand: front_scores(front, cand), low, high,
                            num_seeds=task.num_seeds, rounds=hp["search_rounds"], per_round=hp["search_per_round"],
                            seed=list(task.seeds), grid=torch.tensor(BLEND_GRID, dtype=dtype),
                            final_radius=SEARCH_FINAL_RADIUS)
    search_seconds = time.perf_counter() - search_start
    val_logits = sm.blend_logits(maps, div, result.best.unsqueeze(1))[:, 0]
    tensors = {"bridge": bridge.detach(), "text_prototypes": text.projected, "image_prototypes": image_protos,
               "bridged_prototypes": bridged_protos.detach(), "divergence": div, "blend": result.best,
               "text_projection": wt}
    if affine is not None:
        tensors.update(projection_bias=affine.bias,
                       eos_length=torch.tensor(affine.eos_length, dtype=dtype, device=wt.device))
    hparams = [{**hp, **dict(zip(sm.BLEND_PARAMS, row))} for row in result.best.tolist()]
    info = {**(info or {}), "val_accuracy": accuracy(val_logits, labels).tolist(),
            "fit_seconds": time.perf_counter() - started, "search_seconds": search_seconds,
            "search_evaluated": result.evaluated, "search_scored_share": front.scored_share}
    return FittedState(method=method, tensors=tensors, hparams=hparams, info=info)


def blend_state_logits(state: FittedState, queries: Tensor) -> Tensor:
    """Blended logits [S, N, C] of raw queries [N, D] or [S, N, D] under a fitted SeMoBridge(-T) state."""
    t = state.tensors
    s = t["image_prototypes"].shape[0]
    q = as_seed_batch(queries, s).to(device=t["blend"].device, dtype=t["blend"].dtype)
    zero = (q == 0).all(-1)
    if bool(zero.any()):
        raise BridgeInputError(f"queries hold an all-zero embedding at row {int(zero.nonzero()[0, -1])}")
    affine = None
    if "projection_bias" in t:
        affine = sm.affine_head(t["text_projection"], t["projection_bias"], float(t["eos_length"]))
    maps = sm.cosine_maps(q, t["text_prototypes"], t["image_prototypes"], t["bridged_prototypes"], t["bridge"],
                          t["text_projection"], affine)
    return sm.blend_logits(maps, t["divergence"], t["blend"].unsqueeze(1))[:, 0]


@register_method
class SeMoBridge:
    name = "semobridge"
    summary = "SeMoBridge, training-free: closed-form bridge pinv(Wt) into the text space, three cosine maps, 7-parameter blend searched on validation"
    defaults = {**SEARCH_DEFAULTS, "views_used": 0}
    needs = frozenset({EOS})

    def fit(self, task, **hparams) -> FittedState:
        started = time.perf_counter()
        hp = check_hparams(self, hparams)
        dtype, text, views = bridge_inputs(self, task, hp["views_used"])
        bridge = sm.initial_bridge(task.text_projection.to(dtype))
        return fit_blend(task, text, views, bridge, None, hp, self.name, started)

    def logits(self, state: FittedState, queries: Tensor) -> Tensor:
        return blend_state_logits(state, queries)
