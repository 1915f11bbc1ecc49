"""Modality-gap and intra-modal calibration metrics: pure tensor functions, no I/O.

Shapes: N analysed images, D embedding size, C classes, M gallery (few-shot support) images, P pairs.
Every embedding passed in is already L2-normalised (rows of unit length), so a dot product is a cosine.

    centroid_gap        ‖mean_i x_i − mean_c t_c‖  (images against class texts; Liang et al.'s gap)
    own_text_cosine     mean_i x_i · t_{y_i}
    text_top1           fraction of images whose most similar class text is their own class's
    sample_pairs        same-class and different-class image pairs (all, or a seeded sample per class)
    cosine_scan         every image's nearest other image and the cosines of given pairs, in row chunks
    roc_auc             P(a same-class pair is more similar than a different-class pair), ties count ½
    nn_consistency      fraction of images whose nearest other image has the same class
    retrieval_at_k      fraction of queries whose K most similar gallery images include one of their class
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

# Rows of the [rows, N] similarity block cosine_scan and retrieval_at_k build at once: at most 2^24 floats
# (64 MiB fp32).
SCAN_ELEMENTS = 1 << 24


def centroid_gap(images: Tensor, texts: Tensor) -> float:
    """‖mean of images [N, D] − mean of class texts [C, D]‖ (every class text counts once)."""
    return float((images.mean(0) - texts.mean(0)).norm())


def own_text_cosine(images: Tensor, labels: Tensor, texts: Tensor) -> float:
    """Mean cosine of each image [N, D] with its own class's text (texts [C, D], labels [N])."""
    return float((images * texts[labels]).sum(-1).mean())


def text_top1(images: Tensor, labels: Tensor, texts: Tensor) -> float:
    """Fraction of images [N, D] whose most similar class text (texts [C, D]) is their class (labels [N])."""
    return float(((images @ texts.T).argmax(-1) == labels).double().mean())


class Pairs(NamedTuple):
    """Image index pairs (i, j), i ≠ j: same-class `intra_*` [P1] and different-class `inter_*` [P2] (int64),
    with how many of each exist (`intra_total` unordered, `inter_total` ordered: i in a class, j outside)."""

    intra_i: Tensor
    intra_j: Tensor
    inter_i: Tensor
    inter_j: Tensor
    intra_total: int
    inter_total: int


def sample_pairs(labels: Tensor, max_per_class: int, seed: int) -> Pairs:
    """Same-class and different-class pairs of the images with labels [N], class by class.

    Per class c with n_c images: its n_c(n_c−1)/2 same-class pairs, all of them when there are at most
    `max_per_class`, else `max_per_class` drawn uniformly without replacement; and its n_c·(N − n_c) ordered
    pairs (i in c, j not in c), likewise all or `max_per_class` of them. Enumerated in full, every
    unordered different-class pair appears twice (once from each class), which weights all pairs equally.
    The draws come from numpy's Generator seeded with `seed` (index bookkeeping: many small steps, which
    numpy does without torch's per-operation thread start-up).
    """
    rng = np.random.default_rng(seed)
    values = labels.cpu().numpy()
    order = np.argsort(values, kind="stable")
    counts = np.unique(values, return_counts=True)[1]
    n = values.size
    parts: dict[str, list[np.ndarray]] = {"ii": [], "ij": [], "xi": [], "xj": []}
    intra_total = inter_total = 0
    start = 0
    for count in counts.tolist():
        members, others = order[start:start + count], np.concatenate([order[:start], order[start + count:]])
        start += count
        pairs, crossing = count * (count - 1) // 2, count * (n - count)
        intra_total, inter_total = intra_total + pairs, inter_total + crossing
        if pairs:
            row, col = _triangle_index(_draw(pairs, max_per_class, rng), count)
            parts["ii"].append(members[row])
            parts["ij"].append(members[col])
        if crossing:
            k = _draw(crossing, max_per_class, rng)
            parts["xi"].append(members[k // (n - count)])
            parts["xj"].append(others[k % (n - count)])
    joined = {key: torch.from_numpy(np.concatenate(value) if value else np.zeros(0, dtype=np.int64)).long()
              for key, value in parts.items()}
    return Pairs(joined["ii"], joined["ij"], joined["xi"], joined["xj"], intra_total, inter_total)


def _draw(total: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """All of range(total) when total ≤ limit, else `limit` distinct values drawn uniformly (sorted)."""
    if total <= limit:
        return np.arange(total)
    return np.sort(rng.choice(total, size=limit, replace=False))


def _triangle_index(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column (row < col) of the k-th entries [P] of the strict upper triangle of an n × n matrix,
    row by row."""
    before = lambda r: r * (2 * n - r - 1) // 2                   # noqa: E731  entries above row r
    row = np.floor((2 * n - 1 - np.sqrt((2 * n - 1) ** 2 - 8 * k.astype(np.float64))) / 2).astype(np.int64)
    row = row - (k < before(row)) + (k >= before(row + 1))       # undo a rounding error
    return row, k - before(row) + row + 1


class Scan(NamedTuple):
    """nearest [N] int64: index of each image's most similar other image; pair_cosines [P] of the pairs."""

    nearest: Tensor
    pair_cosines: Tensor


def cosine_scan(x: Tensor, pair_i: Tensor, pair_j: Tensor) -> Scan:
    """One pass over the cosine matrix x xᵀ of x [N, D], in blocks of rows: each row's nearest other row
    (itself excluded; ties go to the lower index) and the cosines x_i · x_j of the pairs (pair_i, pair_j) [P]."""
    n = x.shape[0]
    rows = max(1, SCAN_ELEMENTS // max(1, n))
    nearest = torch.empty(n, dtype=torch.long, device=x.device)
    cosines = torch.empty(pair_i.numel(), dtype=x.dtype, device=x.device)
    pair_i, pair_j = pair_i.to(x.device), pair_j.to(x.device)
    block_of_pair = pair_i // rows
    for block, start in enumerate(range(0, n, rows)):
        stop = min(n, start + rows)
        sims = x[start:stop] @ x.T                                           # [rows, N]
        mine = (block_of_pair == block).nonzero().squeeze(-1)
        cosines[mine] = sims[pair_i[mine] - start, pair_j[mine]]
        local = torch.arange(stop - start, device=x.device)
        sims[local, local + start] = float("-inf")
        nearest[start:stop] = sims.argmax(-1)
    return Scan(nearest, cosines)


def roc_auc(positive: Tensor, negative: Tensor) -> float:
    """Exact area under the ROC curve of scores positive [P] against negative [Q]: the Mann-Whitney
    statistic (Σ ranks of the positives − P(P+1)/2) / (P·Q) with average ranks for ties, i.e.
    P(s⁺ > s⁻) + ½ P(s⁺ = s⁻). NaN when either side is empty."""
    p, q = positive.numel(), negative.numel()
    if p == 0 or q == 0:
        return float("nan")
    scores = torch.cat([positive, negative]).double().cpu()
    ranks = _average_ranks(scores)
    return float((ranks[:p].sum() - p * (p + 1) / 2) / (p * q))


def _average_ranks(scores: Tensor) -> Tensor:
    """1-based ranks [N] of scores [N] in increasing order, tied scores sharing their average rank."""
    values, order = torch.sort(scores, stable=True)
    _, inverse, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    last = torch.cumsum(counts, 0).double()                                   # rank of each group's last
    average = last - (counts.double() - 1) / 2
    ranks = torch.empty_like(scores)
    ranks[order] = average[inverse]
    return ranks


def nn_consistency(nearest: Tensor, labels: Tensor) -> float:
    """Fraction of images whose nearest other image (nearest [N], from cosine_scan) shares their label [N]."""
    return float((labels[nearest] == labels).double().mean())


def retrieval_at_k(queries: Tensor, query_labels: Tensor, gallery: Tensor, gallery_labels: Tensor,
                   ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """{K: fraction of queries [N, D] (labels [N]) whose K most similar gallery images [M, D] (labels [M]),
    by cosine, include one of their class}; K larger than M counts as M. Ties at the K-th place are broken
    by torch.topk (there is no tie in practice with real-valued embeddings)."""
    largest = min(max(ks), gallery.shape[0])
    rows = max(1, SCAN_ELEMENTS // max(1, gallery.shape[0]))
    hits = {k: 0 for k in ks}
    for start in range(0, queries.shape[0], rows):
        top = (queries[start:start + rows] @ gallery.T).topk(largest, dim=-1).indices          # [rows, K]
        same = gallery_labels[top] == query_labels[start:start + rows, None]
        for k in ks:
            hits[k] += int(same[:, :min(k, largest)].any(-1).sum())
    return {k: hits[k] / max(1, queries.shape[0]) for k in ks}
