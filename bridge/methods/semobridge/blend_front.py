"""Scoring many blend candidates on the validation queries at once (SeMoBridge's blend search).

Every blended logit is increasing in S1, S2, S3 and in the class weight w_c = exp(s·d_c) (s ≥ 0, λ ≥ 0,
α, β, γ ≥ 0). So if class c' has S1, S2, S3 and d all ≥ those of class c for a query (one strictly), c
can never be that query's strict arg-max, for ANY candidate, and never above c' in value. Per query we keep

    slot 0:   the true class y;
    slots 1+: the classes that no class other than y dominates (the Pareto front of the others).

The arg-max over all classes is y exactly when slot 0 beats every other slot, and the best wrong logit is
always a front class's (a dominated class is dominated by a front class: dominance is a strict partial
order), so accuracy and the margin below are exact (up to exact float ties between different classes,
which have measure zero). The front is found exactly in two passes: per query, the classes dominated by one
of a few strong candidates (the top `dominators` of each feature) go first, then the survivors are tested
against each other.

Fronts are small (about 13 of 100 and 30 of 1,000 classes on the synthetic benchmark caches) but vary from
query to query, so queries are sorted by front size and scored in groups, each padded (by repeating its
first front class) only to the largest front of its group: the work per candidate is about the sum of the
front sizes, not N × the largest. `ValidationFront.scored_share` is the share of (query, class) pairs
scored per candidate.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from clipbridge.bridge.methods.semobridge.algebra import Maps, blend_exponent_logits

GROUP_QUERIES = 128          # queries (per seed) scored together; sorted by front size, so padding stays small


class FrontGroup(NamedTuple):
    """One group of queries: maps [S, g, 1+k] and divergence div [S, g, 1+k] of each query's kept classes
    (slot 0 = true class, padding repeats slot 1), index [S, g] the queries' positions in the validation set."""

    maps: Maps
    div: Tensor
    index: Tensor


class ValidationFront(NamedTuple):
    """The groups covering every validation query once per seed; valid [S, N] real queries, count [S, 1]
    their number, classes C (for scored_share)."""

    groups: tuple[FrontGroup, ...]
    valid: Tensor
    count: Tensor
    classes: int

    @property
    def scored_share(self) -> float:
        """(query, class) pairs scored per candidate (padding included) over N × C."""
        n = self.valid.shape[1]
        scored = sum(g.index.shape[1] * g.maps.s1.shape[-1] for g in self.groups)
        return scored / max(1, n * self.classes)


def validation_front(maps: Maps, div: Tensor, labels: Tensor, dominators: int = 8,
                     chunk_elements: int = 1 << 21, group: int = GROUP_QUERIES) -> ValidationFront:
    """Compact the validation maps [S, N, C], div [S, C], labels [S, N] (−1 = padding) to each query's
    classes that can matter (module docstring), grouped by front size."""
    s, n, c = maps.s1.shape
    valid = labels >= 0
    y = labels.clamp_min(0)
    t = min(c, dominators)
    rows = max(1, chunk_elements // max(1, s * c * 4))
    parts = [_undominated(_features(maps, div, slice(i, i + rows)), y[:, i:i + rows], t) for i in range(0, n, rows)]
    keep = torch.cat(parts, 1) if parts else torch.zeros(s, 0, c, dtype=torch.bool, device=div.device)
    keep &= valid.unsqueeze(-1)                                  # padding queries: nothing to score
    classes, size = _mutually_undominated(maps, div, keep, chunk_elements)              # [S, N, k], [S, N]
    order = size.argsort(dim=1, stable=True)                                            # smallest fronts first
    groups = []
    for i in range(0, n, group):
        index = order[:, i:i + group]                                                   # [S, g]
        width = max(1, int(size.gather(1, index).max()))
        picked = classes.gather(1, index.unsqueeze(-1).expand(-1, -1, classes.shape[-1]))[..., :width]
        rank = torch.arange(width, device=picked.device)
        others = torch.where(rank < size.gather(1, index).unsqueeze(-1), picked, picked[..., :1].expand_as(picked))
        slots = torch.cat([y.gather(1, index).unsqueeze(-1), others], -1)             # [S, g, 1+width]
        groups.append(FrontGroup(Maps(*(_pick(x, index, slots) for x in maps)),
                                 div.gather(-1, slots.reshape(s, -1)).reshape(slots.shape), index))
    count = valid.sum(-1, keepdim=True).clamp_min(1).to(maps.s1.dtype)
    return ValidationFront(tuple(groups), valid, count, c)


def _pick(x: Tensor, index: Tensor, slots: Tensor) -> Tensor:
    """x [S, N, C] at rows index [S, r] and classes slots [S, r, w] -> [S, r, w]."""
    s, n, c = x.shape
    flat = (index.unsqueeze(-1) * c + slots).reshape(s, -1)
    return x.reshape(s, n * c).gather(1, flat).reshape(slots.shape)


def _stack_features(s1: Tensor, s2: Tensor, s3: Tensor, d: Tensor) -> Tensor:
    """[5, ...]: S1, S2, S3, d and their sum (added in this order). The sum gives dominance a cheap strict
    part: if a ≥ b on every feature, then sum(a) ≥ sum(b) in floats too (rounding is monotone), and
    sum(a) > sum(b) implies a ≠ b; so "a ≥ b everywhere and sum(a) > sum(b)" is dominance, and the rare
    dominance it misses (sums rounding to equal) only keeps a class, which is harmless."""
    out = torch.stack(torch.broadcast_tensors(s1, s2, s3, d, s1))
    torch.add(out[0], out[1], out=out[4])
    out[4] += out[2]
    out[4] += out[3]
    return out


def _features(maps: Maps, div: Tensor, rows: slice) -> Tensor:
    """[5, S, r, C] features (_stack_features) of the validation rows `rows`."""
    return _stack_features(maps.s1[:, rows], maps.s2[:, rows], maps.s3[:, rows], div.unsqueeze(1))


def _undominated(feats: Tensor, y: Tensor, t: int) -> Tensor:
    """[S, n, C] bool: classes c ≠ y_i not dominated by any of the candidate dominators (the top t of each
    of the four features, y excluded); feats [5, S, n, C] (_stack_features). _dominated_by's test, one
    dominator at a time, so that the work stays [S, n, C] (C is large here, the dominators few)."""
    true = torch.zeros(feats.shape[1:], dtype=torch.bool, device=feats.device).scatter_(-1, y.unsqueeze(-1), True)
    idx = torch.cat([feats[j].masked_fill(true, float("-inf")).topk(t, dim=-1).indices for j in range(4)], -1)
    cand = feats.gather(-1, idx.unsqueeze(0).expand(5, -1, -1, -1)).unsqueeze(-1)     # [5, S, n, 4t, 1]
    usable = idx != y.unsqueeze(-1)
    alive = ~true
    for i in range(idx.shape[-1]):                     # one dominator at a time: [S, n, C] work, no [.., 4t, C]
        dom = torch.gt(cand[4, :, :, i], feats[4]).logical_and_(usable[:, :, i:i + 1])
        for j in range(4):
            dom.logical_and_(cand[j, :, :, i] >= feats[j])
        alive.logical_and_(dom.logical_not_())
    return alive


def _dominated_by(cand: Tensor, feats: Tensor, usable: Tensor) -> Tensor:
    """[S, n, C] bool: class c (feats [5, S, n, C]) is dominated by a usable (usable [S, n, T]) candidate
    (cand [5, S, n, T]): candidate ≥ class on the four features and > on their sum (_stack_features)."""
    dom = cand[4].unsqueeze(-1) > feats[4].unsqueeze(-2)                                # [S, n, T, C]
    for j in range(4):
        dom.logical_and_(cand[j].unsqueeze(-1) >= feats[j].unsqueeze(-2))
    return dom.logical_and_(usable.unsqueeze(-1)).any(-2)


def _mutually_undominated(maps: Maps, div: Tensor, keep: Tensor, chunk_elements: int) -> tuple[Tensor, Tensor]:
    """The exact front from a superset: classes [S, N, k] (front class indices first, ascending; the rest
    any) and their number size [S, N], of the classes of `keep` [S, N, C] that no other class of `keep`
    dominates (every class outside `keep` is dominated by one inside, so this is the Pareto front of all of
    them). Queries are processed sorted by how many they keep, in chunks of about chunk_elements comparisons."""
    s, n, c = keep.shape
    kept = keep.sum(-1)                                                                   # [S, N]
    k = max(1, int(kept.max())) if n else 1
    classes = torch.sort((~keep).to(torch.int8), dim=-1, stable=True).indices[..., :k]   # kept first, ascending
    out_keep = torch.zeros(s, n, k, dtype=torch.bool, device=keep.device)
    order = kept.argsort(dim=1, stable=True)
    widest = kept.gather(1, order).amax(0).clamp_min(1).tolist() if n else []   # [N] non-decreasing over ranks
    i = 0
    while i < n:
        rows = max(1, chunk_elements // (s * widest[i] ** 2))
        while rows > 1 and rows * s * widest[min(n, i + rows) - 1] ** 2 > chunk_elements:
            rows //= 2
        index = order[:, i:i + rows]                                                      # [S, r]
        width = widest[min(n, i + rows) - 1]
        cls = classes.gather(1, index.unsqueeze(-1).expand(-1, -1, k))[..., :width]      # [S, r, w]
        usable = torch.arange(width, device=keep.device) < kept.gather(1, index).unsqueeze(-1)
        d = div.gather(1, cls.reshape(s, -1)).reshape(cls.shape)
        f = _stack_features(*(_pick(x, index, cls) for x in maps), d)                     # [5, S, r, w]
        alive = usable & ~_dominated_by(f, f, usable)
        out_keep.scatter_(1, index.unsqueeze(-1).expand(-1, -1, k),
                          torch.nn.functional.pad(alive, (0, k - width)))
        i += rows
    size = out_keep.sum(-1)
    pack = torch.sort((~out_keep).to(torch.int8), dim=-1, stable=True).indices         # survivors first
    return classes.gather(-1, pack), size


def front_scores(front: ValidationFront, params: Tensor, chunk_elements: int = 1 << 19) -> tuple[Tensor, Tensor]:
    """Validation accuracy (percent) and tie-break margin, both [S, M], of blend candidates [S, M, 7].

    The margin is the mean over real queries of log(logit_true / max_{c≠y} logit_c): positive exactly
    for correctly classified queries, invariant to a common scale of the λs, larger for wider margins.
    Per-query results are put back in validation order before the sums (the same order as an exhaustive
    scoring).
    """
    s, m, _ = params.shape
    n = front.valid.shape[1]
    dtype = front.count.dtype
    hit = torch.zeros(s, m, n, dtype=torch.bool, device=params.device)
    ratio = torch.zeros(s, m, n, dtype=dtype, device=params.device)
    for g in front.groups:
        rows, width = g.index.shape[1], g.maps.s1.shape[-1]
        step = max(1, chunk_elements // max(1, s * rows * width))
        where = g.index.unsqueeze(1)                                                        # [S, 1, g]
        for i in range(0, m, step):
            logits = blend_exponent_logits(g.maps, g.div, params[:, i:i + step])           # [S, m', g, 1+w]
            true, rival = logits[..., 0], logits[..., 1:].amax(-1)
            part = slice(i, i + logits.shape[1])
            index = where.expand(-1, logits.shape[1], -1)
            hit[:, part].scatter_(2, index, true > rival)
            ratio[:, part].scatter_(2, index, torch.log(true / rival).nan_to_num(0.0))
    hit &= front.valid[:, None]
    ratio.masked_fill_(~front.valid[:, None], 0.0)
    acc = 100.0 * hit.sum(-1).to(dtype) / front.count
    return acc, ratio.sum(-1) / front.count
