"""Cross-Modal Mapping, CMM (METHOD.md §4).

    v  = n(f)                 W = I + Δ (Δ init 0)      T init T̄ (trainable text prototypes)
    v' = n(v W)               logits_CMM = τ v' n(T)ᵀ   logits_CLIP = τ v T̄ᵀ
    logits = logits_CLIP + α · logits_CMM
    L = CE(logits with α = train_alpha, y) + λ_tri · mean_i max(0, m + d(v'_i, T_{y_i}) − min_{j≠y_i} d(v'_i, T_j))
    d = 1 − cosine

Trained on every real support view (padded views masked out) with full-batch AdamW through
bridge.training.train_and_select; the step with the best validation accuracy (at train_alpha, evaluated
every `eval_every` steps, step 0 = zero-shot-like initial values, earliest on ties) is kept, then α is
searched on validation over [alpha_low, alpha_high] with bridge.search.batched_search (a regular grid of
`alpha_points` values plus its random rounds).

NOTE: the CMM paper's exact hyper-parameters were not available to us. The defaults below (lr 1e-3,
300 full-batch steps, weight decay 0.01, margin 0.2, λ_tri 1, training α 1, test α searched in [0, 5]) are
OUR choices, not the paper's; all are exposed as hyper-parameters.
"""
from __future__ import annotations

import torch
from torch import Tensor

from clipbridge.bridge.features import begin_fit, prepare_queries, support_views, validation
from clipbridge.bridge.fusion import linear_fusion_scorer, search_fusion
from clipbridge.bridge.methods.zeroshot import zeroshot_logits
from clipbridge.bridge.ops import accuracy
from clipbridge.bridge.registry import FittedState, register_method
from clipbridge.bridge.training import train_and_select


def mapped(v: Tensor, delta: Tensor) -> Tensor:
    """v' = n(v (I + Δ)) for normalised v [S, N, D] and Δ [S, D, D]; zero (padded) rows stay zero."""
    out = v + v @ delta
    return out / out.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)


def unit(t: Tensor) -> Tensor:
    """n(T) over the last dim (T is trained, so it is normalised on every use)."""
    return t / t.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(t.dtype).tiny)


def cmm_logits(v: Tensor, text: Tensor, delta: Tensor, protos: Tensor, logit_scale, alpha: Tensor) -> Tensor:
    """τ v T̄ᵀ + α τ v' n(T)ᵀ for v [S, N, D], T̄ [C, D], Δ [S, D, D], T [S, C, D], α [S] -> [S, N, C]."""
    cmm = logit_scale * mapped(v, delta) @ unit(protos).transpose(1, 2)
    return zeroshot_logits(v, text, logit_scale) + alpha[:, None, None] * cmm


def triplet_loss(v_mapped: Tensor, protos: Tensor, labels: Tensor, margin: float) -> Tensor:
    """Per-view max(0, m + d(v', T_y) − min_{j≠y} d(v', T_j)), d = 1 − cosine: [S, N, D] -> [S, N]."""
    dist = 1 - v_mapped @ unit(protos).transpose(1, 2)                            # [S, N, C]
    pos = dist.gather(-1, labels.expand(dist.shape[:2]).unsqueeze(-1)).squeeze(-1)
    own = torch.nn.functional.one_hot(labels, dist.shape[-1]).bool()
    neg = dist.masked_fill(own, float("inf")).amin(-1)
    return torch.relu(margin + pos - neg)


@register_method
class CMM:
    name = "cmm"
    summary = "Cross-Modal Mapping: a residual linear map of images into the text space and trainable text prototypes (CE + triplet), fused with zero-shot"
    defaults = {"steps": 300, "lr": 1e-3, "weight_decay": 0.01, "margin": 0.2, "triplet_weight": 1.0,
                "train_alpha": 1.0, "eval_every": 10, "select": "with-epoch-0", "alpha_low": 0.0, "alpha_high": 5.0,
                "alpha_points": 51, "search_rounds": 2, "search_per_round": 16}

    def fit(self, task, **hparams) -> FittedState:
        hp, start, dtype, text = begin_fit(self, task, hparams)
        views = support_views(task, dtype)
        s, d = task.num_seeds, task.dim
        weight = views.mask.to(dtype)
        tau = task.logit_scale
        train_alpha = torch.full((s,), float(hp["train_alpha"]), dtype=dtype, device=text.device)

        base = zeroshot_logits(views.x, text, tau)         # the fixed CLIP term of cmm_logits, computed once

        def loss(params: dict[str, Tensor], step: int) -> Tensor:
            logits = base + train_alpha[:, None, None] * (tau * mapped(views.x, params["delta"])
                                                          @ unit(params["protos"]).transpose(1, 2))
            ce = -torch.log_softmax(logits, -1).gather(-1, views.labels.expand(s, -1).unsqueeze(-1)).squeeze(-1)
            tri = triplet_loss(mapped(views.x, params["delta"]), params["protos"], views.labels, hp["margin"])
            return ((ce + hp["triplet_weight"] * tri) * weight).sum(-1) / weight.sum()

        val_q, val_y = validation(task, dtype)

        def val_accuracy(params: dict[str, Tensor]) -> Tensor:
            return accuracy(cmm_logits(val_q, text, params["delta"], params["protos"], tau, train_alpha), val_y)

        init = {"delta": torch.zeros(s, d, d, dtype=dtype, device=text.device),
                "protos": text.expand(s, -1, -1).clone()}
        trained = train_and_select(init, loss, val_accuracy, steps=int(hp["steps"]), lr=hp["lr"],
                                   weight_decay=hp["weight_decay"], eval_every=int(hp["eval_every"]),
                                   select=hp["select"])
        delta, protos = trained.params["delta"], unit(trained.params["protos"])

        base = zeroshot_logits(val_q, text, tau)
        extra = tau * mapped(val_q, delta) @ protos.transpose(1, 2)
        grid = torch.linspace(hp["alpha_low"], hp["alpha_high"], int(hp["alpha_points"]), dtype=dtype)
        choice = search_fusion(linear_fusion_scorer(base, extra, val_y), [hp["alpha_low"]], [hp["alpha_high"]],
                               seeds=task.seeds, rounds=int(hp["search_rounds"]),
                               per_round=int(hp["search_per_round"]), grid=grid.unsqueeze(-1), like=base)
        alpha = choice.best[:, 0]
        tensors = {"text": text, "delta": delta, "protos": protos, "alpha": alpha,
                   "logit_scale": torch.tensor(tau, dtype=dtype, device=text.device)}
        chosen = [{**hp, "alpha": float(a), "step": int(st)} for a, st in zip(alpha.tolist(), trained.step.tolist())]
        info = choice.fit_info(start, train_val_accuracy=trained.curve.transpose(0, 1).tolist(),
                               train_steps=trained.curve_steps)
        return FittedState(self.name, tensors, chosen, info)

    def logits(self, state: FittedState, queries: Tensor) -> Tensor:
        t = state.tensors
        q = prepare_queries(queries, len(state.hparams), t["text"])
        return cmm_logits(q, t["text"], t["delta"], t["protos"], t["logit_scale"], t["alpha"])
