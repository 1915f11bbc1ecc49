"""All metrics of one representation (evaluate.analysis.metrics), on the same images, pairs and gallery
for every representation so that rows compare.

Shapes: N analysed test images, M support (gallery) images, C classes, D embedding size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from clipbridge.evaluate.analysis.metrics import (Pairs, centroid_gap, cosine_scan, nn_consistency,
                                                  own_text_cosine, retrieval_at_k, roc_auc, text_top1)
from clipbridge.evaluate.analysis.representations import Representation

RETRIEVAL_KS = (1, 5)


@dataclass(frozen=True)
class Measurement:
    """row: the metrics (JSON-able floats, see `measure`); intra [P1] / inter [P2]: the pair cosines
    behind intra_cosine, inter_cosine and roc_auc (for the histograms)."""

    name: str
    row: dict[str, Any]
    intra: Tensor
    inter: Tensor


def measure(rep: Representation, labels: Tensor, support_labels: Tensor, text: Tensor, pairs: Pairs) -> Measurement:
    """The metrics of rep (images [N, D] with labels [N], support [M, D] with support_labels [M]) against the
    class texts T̄ [C, D], on the given image pairs.

    row keys: centroid_gap, own_text_cosine, text_top1 (against T̄); intra_cosine, inter_cosine (mean
    same-class / different-class pair cosine), separation (their difference), roc_auc, nn_consistency,
    retrieval@1, retrieval@5; and, when the method compares images with other text than T̄, own_text =
    {name, centroid_gap, own_text_cosine, text_top1} against that text.
    """
    text = text.to(rep.images.dtype)
    n_intra = pairs.intra_i.numel()
    scan = cosine_scan(rep.images, torch.cat([pairs.intra_i, pairs.inter_i]), torch.cat([pairs.intra_j, pairs.inter_j]))
    intra, inter = scan.pair_cosines[:n_intra], scan.pair_cosines[n_intra:]
    retrieval = retrieval_at_k(rep.images, labels, rep.support, support_labels, RETRIEVAL_KS)
    row: dict[str, Any] = {
        "centroid_gap": centroid_gap(rep.images, text),
        "own_text_cosine": own_text_cosine(rep.images, labels, text),
        "text_top1": text_top1(rep.images, labels, text),
        "intra_cosine": float(intra.mean()) if n_intra else float("nan"),
        "inter_cosine": float(inter.mean()) if inter.numel() else float("nan"),
        "roc_auc": roc_auc(intra, inter),
        "nn_consistency": nn_consistency(scan.nearest, labels),
        **{f"retrieval@{k}": value for k, value in retrieval.items()},
    }
    row["separation"] = row["intra_cosine"] - row["inter_cosine"]
    if rep.own_text is not None:
        own = rep.own_text.to(rep.images.dtype)
        row["own_text"] = {"name": rep.own_text_name, "centroid_gap": centroid_gap(rep.images, own),
                           "own_text_cosine": own_text_cosine(rep.images, labels, own),
                           "text_top1": text_top1(rep.images, labels, own)}
    return Measurement(rep.name, row, intra.cpu(), inter.cpu())
