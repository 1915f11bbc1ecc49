"""SeMoBridge's pruned blend scoring (bridge.methods.semobridge.blend_front) against exhaustive scoring over
every class: the exact Pareto front, the grouped scoring, ties, padding queries."""
from __future__ import annotations

import pytest
import torch

from clipbridge.bridge.methods.semobridge import algebra as sm
from clipbridge.bridge.methods.semobridge.blend_front import front_scores, validation_front


def _problem(seed: int, s: int, n: int, c: int, quantum: float | None):
    """Random correlated maps [S, N, C], div [S, C], labels [S, N] (some −1); quantum rounds every value to a
    coarse grid, so that features, whole classes and logits tie."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(s, n, c, generator=g, dtype=torch.float64)
    parts = [0.6 * base + 0.4 * torch.rand(s, n, c, generator=g, dtype=torch.float64) for _ in range(3)]
    div = 3 * torch.rand(s, c, generator=g, dtype=torch.float64)
    if quantum:
        parts = [(p / quantum).round() * quantum for p in parts]
        div = (div / quantum).round() * quantum
    labels = torch.randint(0, c, (s, n), generator=g)
    labels[:, -3:] = -1                                               # padding queries
    return sm.Maps(*parts), div, labels


def _exhaustive(maps, div, labels, params):
    """Accuracy and margin over all classes with the search's rule: a hit is true > every other class."""
    full = sm.blend_logits(maps, div, params)                                            # [S, M, N, C]
    y = labels.clamp_min(0)[:, None, :, None].expand(-1, params.shape[1], -1, 1)
    true = full.gather(-1, y).squeeze(-1)
    rival = full.scatter(-1, y, float("-inf")).amax(-1)
    valid = (labels >= 0)[:, None]
    count = (labels >= 0).sum(-1, keepdim=True).to(full.dtype)
    acc = 100.0 * ((true > rival) & valid).sum(-1).to(full.dtype) / count
    margin = (torch.log(true / rival).nan_to_num(0.0) * valid).sum(-1) / count
    return acc, margin


def _pareto(feats: torch.Tensor, y: int) -> set[int]:
    """Brute force: classes ≠ y that no other class ≠ y dominates (≥ everywhere, > somewhere). feats [C, 4]."""
    c = feats.shape[0]
    ge = (feats.unsqueeze(0) >= feats.unsqueeze(1)).all(-1) & (feats.unsqueeze(0) > feats.unsqueeze(1)).any(-1)
    ge[:, y] = False                                                  # ge[c, c']: c' dominates c
    return {i for i in range(c) if i != y and not bool(ge[i].any())}


@pytest.mark.parametrize("seed,s,n,c,quantum,dominators,group", [
    (0, 2, 90, 40, None, 2, 16), (1, 1, 60, 7, None, 8, 128), (2, 3, 70, 120, None, 4, 8),
    (3, 2, 50, 30, 0.25, 3, 16), (4, 2, 40, 60, 0.125, 1, 5), (5, 1, 30, 2, None, 8, 4)])
def test_front_is_the_exact_pareto_front_and_scores_equal_exhaustive_scoring(seed, s, n, c, quantum, dominators, group):
    maps, div, labels = _problem(seed, s, n, c, quantum)
    front = validation_front(maps, div, labels, dominators=dominators, group=group, chunk_elements=4000)
    feats = torch.stack([maps.s1, maps.s2, maps.s3, div.unsqueeze(1).expand(s, n, c)], -1)
    seen = torch.zeros(s, n, dtype=torch.long)
    for grp in front.groups:
        for si in range(s):
            for r, q in enumerate(grp.index[si].tolist()):
                seen[si, q] += 1
                y = int(labels[si, q])
                if y < 0:
                    continue
                kept = grp.maps.s1[si, r]
                assert float(kept[0]) == float(maps.s1[si, q, y])     # slot 0 is the true class
                expected = _pareto(feats[si, q], y)
                want = sorted(float(maps.s1[si, q, j]) for j in expected)
                assert sorted(set(float(v) for v in kept[1:])) == sorted(set(want))
    assert bool((seen == 1).all())                                    # every query in exactly one group
    assert 0 < front.scored_share <= 1.0
    g = torch.Generator().manual_seed(seed + 100)
    params = torch.rand(s, 37, 7, generator=g, dtype=torch.float64) * torch.tensor(sm.BLEND_HIGH, dtype=torch.float64)
    params[:, :3, 4:] = 0.0                                           # λ = 0: every logit 0, all tied
    params[:, 3, 0] = 0.0
    acc, margin = front_scores(front, params, chunk_elements=3000)
    want_acc, want_margin = _exhaustive(maps, div, labels, params)
    assert torch.equal(acc, want_acc)
    assert torch.allclose(margin, want_margin, rtol=1e-12, atol=1e-12)


def test_front_is_much_smaller_than_all_classes_on_correlated_maps():
    maps, div, labels = _problem(7, 2, 200, 300, None)
    front = validation_front(maps, div, labels)
    assert front.scored_share < 0.2
