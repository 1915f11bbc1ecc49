"""GDA, Gaussian discriminant analysis on CLIP features (training-free; METHOD.md §5).

    μ_c   = mean of class c's normalised support views                           [S, C, D]
    X_c   = every real view minus its class mean (padded views excluded)         [S, N, D]
    Σ     = X_cᵀ X_c / (N − 1)  (shared covariance, torch.cov's unbiased form)   [S, D, D]
    Pr    = D · pinv((N − 1)Σ + tr(Σ) I)                                          [S, D, D]
    w_c   = Pr μ_c ;  b_c = log(1/C) − ½ μ_cᵀ Pr μ_c                               [S, C, D], [S, C]
    logits = τ q̄ T̄ᵀ + α (q̄ w_cᵀ + b_c)

α is chosen per seed on validation from GDA's list, the `alpha_points` powers of ten from alpha_low to
alpha_high (1e-4 … 100 by default), by `search` (bridge.fusion): "grid" (the paper recipe) the list alone,
the first strict maximum of validation top-1 accuracy, as the official loop; "batched" (the default, the
uniform recipe) bridge.search.batched_search with the list as its grid plus `search_per_round` log-uniform
points in the same range per round (`search_rounds` rounds), accuracy ties going to the larger true-class
log-probability. The support views are the task's views, each normalised and kept as its own sample (the
paper recipe: the 10 Tip-Adapter crop + flip views of every shot, no plain view, as the official code).
Documented edge case: when every class has a single
real view (or all views of a class coincide) Σ = 0, Pr = 0 and GDA reduces to zero-shot.
"""
from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from clipbridge.bridge.features import begin_fit, prepare_queries, support_views, validation
from clipbridge.bridge.hparams import POSITIVE
from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.fusion import SEARCH_MODES, FusionChoice, first_best, linear_fusion_scorer, log_grid, search_fusion
from clipbridge.bridge.methods.zeroshot import zeroshot_logits
from clipbridge.bridge.registry import FittedState, register_method
from clipbridge.bridge.threads import single_thread


def gda_statistics(x: Tensor, labels: Tensor, mask: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Class means μ [S, C, D] and the precision Pr = D · pinv((N − 1)Σ + tr(Σ) I) [S, D, D] of normalised views
    x [S, N, D] (zero where mask [N] is False), labels [N].

    Only the real views enter: the class sums are one index_add over them (N·D work, where a one-hot product
    costs N·C·D: at 1,000 classes × 160 views that product was most of the fit), the centred views are
    gathered once and subtracted in place; the pinv runs on one thread (bridge.threads.single_thread)."""
    d = x.shape[-1]
    real = mask.nonzero().squeeze(1)
    if real.numel() < mask.numel():
        x, labels = x.index_select(1, real), labels.index_select(0, real)
    count = torch.zeros(num_classes, dtype=x.dtype, device=x.device).index_add_(
        0, labels, torch.ones_like(labels, dtype=x.dtype))
    sums = torch.zeros(x.shape[0], num_classes, d, dtype=x.dtype, device=x.device).index_add_(1, labels, x)
    mu = sums / count.clamp_min(1).unsqueeze(-1)                                                    # [S, C, D]
    centred = mu.index_select(1, labels)
    torch.sub(x, centred, out=centred)                                                              # [S, N, D]
    scatter = centred.transpose(1, 2) @ centred                                                    # (N−1)Σ
    trace = scatter.diagonal(dim1=1, dim2=2).sum(-1) / max(int(real.numel()) - 1, 1)               # tr(Σ)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    with single_thread():
        precision = torch.linalg.pinv(scatter + trace[:, None, None] * eye, hermitian=True)
    return mu, d * precision


def gda_classifier(x: Tensor, labels: Tensor, mask: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Linear GDA head from normalised views x [S, N, D] (zero where mask [N] is False), labels [N].

    Returns weights w [S, C, D] (row c = Pr μ_c) and biases b [S, C].
    """
    mu, precision = gda_statistics(x, labels, mask, num_classes)
    w = mu @ precision                                                                             # Pr symmetric
    b = math.log(1.0 / num_classes) - 0.5 * (w * mu).sum(-1)
    return w, b


def search_alpha(hp: dict, base: Tensor, extra: Tensor, val_y: Tensor, seeds: tuple[int, ...]) -> FusionChoice:
    """α per seed by hp["search"] (module docstring) for the validation logits base + α·extra (both
    [S, Nv, C]; labels val_y [S, Nv], -1 = padding). Returns best [S, 1]."""
    start = time.perf_counter()
    grid = log_grid(hp["alpha_low"], hp["alpha_high"], int(hp["alpha_points"]), dtype=base.dtype,
                    device=base.device).unsqueeze(-1)
    score = linear_fusion_scorer(base, extra, val_y)
    if hp["search"] == "grid":
        accuracy, _ = score(grid.unsqueeze(0).expand(base.shape[0], -1, -1))
        return first_best(accuracy, grid, start)
    if hp["search"] != "batched":
        raise BridgeInputError(f"search must be one of {list(SEARCH_MODES)}, got {hp['search']!r}")
    return search_fusion(score, [hp["alpha_low"]], [hp["alpha_high"]], seeds=seeds, rounds=int(hp["search_rounds"]),
                         per_round=int(hp["search_per_round"]), grid=grid, log_scale=[True], like=base)


@register_method
class GDA:
    name = "gda"
    summary = "Gaussian discriminant analysis with a shared covariance on the support views, fused with zero-shot"
    defaults = {"search": "batched", "alpha_low": 1e-4, "alpha_high": 100.0, "alpha_points": 7,
                "search_rounds": 1, "search_per_round": 8}
    rules = {"alpha_low": POSITIVE, "alpha_high": POSITIVE, "search": SEARCH_MODES}          # a log-scale search

    def fit(self, task, **hparams) -> FittedState:
        hp, start, dtype, text = begin_fit(self, task, hparams)
        views = support_views(task, dtype)
        w, b = gda_classifier(views.x, views.labels, views.mask, task.num_classes)
        val_q, val_y = validation(task, dtype)
        choice = search_alpha(hp, zeroshot_logits(val_q, text, task.logit_scale),
                              val_q @ w.transpose(1, 2) + b.unsqueeze(1), val_y, task.seeds)
        alpha = choice.best[:, 0]
        tensors = {"text": text, "weight": w, "bias": b, "alpha": alpha,
                   "logit_scale": torch.tensor(task.logit_scale, dtype=dtype, device=text.device)}
        chosen = [{**hp, "alpha": float(a)} for a in alpha.tolist()]
        info = choice.fit_info(start)
        return FittedState(self.name, tensors, chosen, info)

    def logits(self, state: FittedState, queries: Tensor) -> Tensor:
        t = state.tensors
        q = prepare_queries(queries, len(state.hparams), t["text"])
        gda = q @ t["weight"].transpose(1, 2) + t["bias"].unsqueeze(1)
        return zeroshot_logits(q, t["text"], t["logit_scale"]) + t["alpha"][:, None, None] * gda
