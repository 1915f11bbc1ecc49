"""Scoring many blend candidates on the validation queries at once (SeMoBridge's blend search).

Every blended logit is increasing in S1, S2, S3 and in the class weight w_c = exp(s·d_c) (s ≥ 0, λ ≥ 0,
α, β, γ ≥ 0). So if class c' has S1, S2, S3 and d all ≥ those of class c for a query (one strictly), c
can never be that query's strict arg-max, for ANY candidate. Per query we keep only

    slot 0:   the true class y;
    slots 1+: the classes that no class other than y dominates (the Pareto front of the others),

padded by repeating slot 1. The arg-max over all classes is y exactly when slot 0 beats every other
slot, and the best wrong class is always among slots 1+, so accuracy and the margin below are exact
(up to exact float ties between different classes, which have measure zero). Fronts are small (tens of
classes out of hundreds), which makes each candidate several times cheaper to score.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from clipbridge.bridge.methods.semobridge.algebra import Maps, blend_exponent_logits


class ValidationFront(NamedTuple):
    """maps [S, N, K] and divergence div [S, N, K] of each query's kept classes (slot 0 = true class);
    valid [S, N] real queries; count [S, 1] their number."""

    maps: Maps
    div: Tensor
    valid: Tensor
    count: Tensor


def validation_front(maps: Maps, div: Tensor, labels: Tensor, dominators: int = 12,
                     chunk_elements: int = 1 << 21) -> ValidationFront:
    """Compact the validation maps [S, N, C], div [S, C], labels [S, N] (−1 = padding) to the classes that
    can matter (module docstring).

    Dominance is tested against, per query, the top `dominators` classes of each of S1, S2, S3 and d
    (never y): a class dropped is dominated by one of them, a class kept may still be dominated by
    another — keeping it is harmless, so the result stays exact while the test costs O(N·C·4·dominators).
    """
    s, n, c = maps.s1.shape
    valid = labels >= 0
    y = labels.clamp_min(0)
    feats = torch.stack([maps.s1, maps.s2, maps.s3, div.unsqueeze(1).expand(s, n, c)], -1)   # [S, N, C, 4]
    t = min(c, dominators)
    rows = max(1, chunk_elements // max(1, s * c * 4 * t))
    parts = [_undominated(feats[:, i:i + rows], y[:, i:i + rows], t) for i in range(0, n, rows)]
    keep = torch.cat(parts, 1) if parts else torch.zeros(s, 0, c, dtype=torch.bool, device=feats.device)
    k = int(keep.sum(-1).max()) if n else 0
    # kept classes first (stable, by class index), padded by repeating the first kept one
    order = torch.sort((~keep).to(torch.int8), dim=-1, stable=True).indices[..., :max(k, 1)]
    rank = torch.arange(order.shape[-1], device=order.device)
    others = torch.where(rank < keep.sum(-1, keepdim=True), order, order[..., :1].expand_as(order))
    slots = torch.cat([y.unsqueeze(-1), others], -1)                                            # [S, N, 1+k]
    pick = lambda x: x.gather(-1, slots)  # noqa: E731
    compact = Maps(pick(maps.s1), pick(maps.s2), pick(maps.s3))
    count = valid.sum(-1, keepdim=True).clamp_min(1).to(maps.s1.dtype)
    return ValidationFront(compact, pick(div.unsqueeze(1).expand(s, n, c)), valid, count)


def _undominated(feats: Tensor, y: Tensor, t: int) -> Tensor:
    """[S, n, C] bool: classes c ≠ y_i not dominated by any of the candidate dominators (feats [S, n, C, 4])."""
    not_true = torch.ones(feats.shape[:3], dtype=torch.bool, device=feats.device).scatter_(-1, y.unsqueeze(-1), False)
    score = feats.masked_fill(~not_true.unsqueeze(-1), float("-inf"))
    idx = torch.cat([score[..., j].topk(t, dim=-1).indices for j in range(4)], -1)          # [S, n, 4t]
    cand = feats.gather(2, idx.unsqueeze(-1).expand(-1, -1, -1, 4))                          # [S, n, 4t, 4]
    weakly, differs = None, None
    for j in range(4):                                   # [S, n, C, 4t]: candidate ≥ class on every feature
        a, b = cand[..., j].unsqueeze(2), feats[..., j].unsqueeze(3)
        weakly = (a >= b) if weakly is None else weakly.logical_and_(a >= b)
        differs = (a != b) if differs is None else differs.logical_or_(a != b)
    dominates = weakly.logical_and_(differs).logical_and_(not_true.gather(2, idx).unsqueeze(2))  # y never counts
    return not_true & ~dominates.any(-1)


def front_scores(front: ValidationFront, params: Tensor, chunk_elements: int = 1 << 19) -> tuple[Tensor, Tensor]:
    """Validation accuracy (percent) and tie-break margin, both [S, M], of blend candidates [S, M, 7].

    The margin is the mean over real queries of log(logit_true / max_{c≠y} logit_c): positive exactly
    for correctly classified queries, invariant to a common scale of the λs, larger for wider margins.
    """
    s, m, _ = params.shape
    n, k = front.maps.s1.shape[-2:]
    step = max(1, chunk_elements // max(1, s * n * k))
    acc, margin = [], []
    for i in range(0, m, step):
        logits = blend_exponent_logits(front.maps, front.div, params[:, i:i + step])           # [S, m, N, K]
        true, rival = logits[..., 0], logits[..., 1:].amax(-1)
        hit = (true > rival) & front.valid[:, None]
        acc.append(100.0 * hit.sum(-1).to(front.count.dtype) / front.count)
        ratio = torch.log(true / rival).nan_to_num(0.0).masked_fill(~front.valid[:, None], 0.0)
        margin.append(ratio.sum(-1) / front.count)
    return torch.cat(acc, 1), torch.cat(margin, 1)

