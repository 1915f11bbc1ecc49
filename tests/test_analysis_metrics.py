"""evaluate.analysis.metrics against brute force: ROC-AUC, retrieval@K, nearest neighbours, pair cosines,
pair sampling."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from clipbridge.evaluate.analysis import metrics
from clipbridge.evaluate.analysis.metrics import (centroid_gap, cosine_scan, nn_consistency, retrieval_at_k, roc_auc,
                                                  sample_pairs)


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def test_roc_auc_equals_the_brute_force_pair_count_with_ties_counting_half():
    g = torch.Generator().manual_seed(0)
    positive = torch.randint(0, 12, (57,), generator=g).float() / 4          # many ties, within and across sides
    negative = torch.randint(-4, 8, (83,), generator=g).float() / 4
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positive.tolist() for n in negative.tolist())
    assert roc_auc(positive, negative) == pytest.approx(wins / (57 * 83), abs=1e-12)
    assert roc_auc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert roc_auc(torch.tensor([0.0]), torch.tensor([1.0])) == 0.0
    assert roc_auc(torch.zeros(0), torch.ones(3)) != roc_auc(torch.zeros(0), torch.ones(3))   # NaN: undefined


def test_retrieval_at_k_equals_a_brute_force_ranking():
    g = torch.Generator().manual_seed(1)
    queries, gallery = _unit(torch.randn(40, 8, generator=g)), _unit(torch.randn(15, 8, generator=g))
    q_labels, g_labels = torch.randint(0, 4, (40,), generator=g), torch.randint(0, 4, (15,), generator=g)
    got = retrieval_at_k(queries, q_labels, gallery, g_labels, ks=(1, 3, 5, 50))
    for k in (1, 3, 5, 50):
        hits = 0
        for q, y in zip(queries, q_labels.tolist()):
            ranked = sorted(range(15), key=lambda j: -float(q @ gallery[j]))
            hits += any(int(g_labels[j]) == y for j in ranked[:k])
        assert got[k] == hits / 40, k
    assert got[50] == float(torch.isin(q_labels, g_labels).double().mean())   # K > M: the whole gallery


def test_cosine_scan_finds_each_images_nearest_other_image_and_pair_cosines_in_blocks(monkeypatch):
    monkeypatch.setattr(metrics, "SCAN_ELEMENTS", 3 * 23)                  # blocks of 3 rows: 8 blocks
    g = torch.Generator().manual_seed(2)
    x = _unit(torch.randn(23, 6, generator=g))
    i, j = torch.randint(0, 23, (50,), generator=g), torch.randint(0, 23, (50,), generator=g)
    scan = cosine_scan(x, i, j)
    sims = x @ x.T
    assert torch.allclose(scan.pair_cosines, sims[i, j], atol=1e-6)
    sims.fill_diagonal_(float("-inf"))
    assert torch.equal(scan.nearest, sims.argmax(-1))
    labels = torch.arange(23) % 3
    assert nn_consistency(scan.nearest, labels) == float((labels[sims.argmax(-1)] == labels).double().mean())


def test_pair_sampling_enumerates_small_classes_and_caps_large_ones_without_repeats():
    labels = torch.tensor([0] * 3 + [1] * 30 + [2] * 5)[torch.randperm(38, generator=torch.Generator().manual_seed(3))]
    pairs = sample_pairs(labels, 20, 4)
    assert pairs.intra_total == 3 + 435 + 10 and pairs.inter_total == 3 * 35 + 30 * 8 + 5 * 33
    assert pairs.intra_i.numel() == 3 + 20 + 10 and pairs.inter_i.numel() == 3 * 20      # every class capped
    assert bool((labels[pairs.intra_i] == labels[pairs.intra_j]).all())
    assert bool((labels[pairs.inter_i] != labels[pairs.inter_j]).all())
    intra = set(zip(pairs.intra_i.tolist(), pairs.intra_j.tolist()))
    assert len(intra) == pairs.intra_i.numel() and all(a != b for a, b in intra)
    assert {tuple(sorted(p)) for p in itertools.combinations(torch.nonzero(labels == 0).squeeze(-1).tolist(), 2)} \
        <= {tuple(sorted(p)) for p in intra}                                  # a small class: every pair
    assert len(set(zip(pairs.inter_i.tolist(), pairs.inter_j.tolist()))) == pairs.inter_i.numel()
    again = sample_pairs(labels, 20, 4)
    assert torch.equal(again.inter_j, pairs.inter_j)                        # a seed fixes the sample
    other = sample_pairs(labels, 20, 5)
    assert not torch.equal(other.inter_j, pairs.inter_j)


def test_centroid_gap_is_the_distance_between_the_two_means():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[-1.0, 0.0]])
    assert centroid_gap(images, texts) == pytest.approx(((1.5) ** 2 + 0.5 ** 2) ** 0.5)


def test_pairs_are_unranked_from_the_upper_triangle_exactly_for_large_classes():
    from clipbridge.evaluate.analysis.metrics import _triangle_index

    for n in (2, 3, 50, 3001):
        row, col = _triangle_index(np.arange(n * (n - 1) // 2), n)
        reference = torch.triu_indices(n, n, 1).numpy()
        assert (row == reference[0]).all() and (col == reference[1]).all(), n
