"""bridge.cache_search's dense scoring (every (query, class) pair, the α axis at once per (β, γ)) counts the same
hits as its pruned scoring and as a plain loop over the grid, on random caches with ties and padding; the cost
estimate keeps large class counts on the pruned path; the official grid choice is unchanged by the path."""
import pytest
import torch

import clipbridge.bridge.cache_search as cs
from clipbridge.bridge.cache_search import CacheFusion, dense_work
from clipbridge.bridge.fusion import first_best
from test_cache_search import exhaustive_hits


def random_cache(seed, s, n, c, k, d=16):
    """base [S, N, C], labels [S, N] (last two rows −1), affinities [S, N, C·K], weights, divergences; class 1
    is a copy of class 0 (same text, keys, weights) and query 0 sits between them, so exact ties occur."""
    g = torch.Generator().manual_seed(seed)
    text = torch.nn.functional.normalize(torch.randn(c, d, generator=g), dim=-1)
    text[1] = text[0]
    y = torch.randint(0, c, (s, n), generator=g)
    y[:, 0] = 1
    y[:, -2:] = -1
    q = torch.nn.functional.normalize(torch.randn(s, n, d, generator=g) + text[y.clamp_min(0)], dim=-1)
    keys = text.repeat_interleave(k, 0) + 0.8 * torch.randn(s, c * k, d, generator=g)
    keys[:, k:2 * k] = keys[:, :k]
    keys = torch.nn.functional.normalize(keys, dim=-1)
    weight = torch.ones(s, c * k)
    if k > 2:
        weight[:, k - 1::k] = 0                                               # a padded shot per class
    div = torch.rand(s, c * k, generator=g) * 3
    div[:, k:2 * k] = div[:, :k]
    return 20 * q @ text.T, y, q @ keys.transpose(1, 2), weight, div


def grid(betas, alphas, gammas):
    """The official visiting order (β outer, α, γ inner) as [G, 3]."""
    return torch.cartesian_prod(torch.tensor(betas), torch.tensor(alphas), torch.tensor(gammas))


def loop_hits(base, y, aff, weight, div, points, formula="ape"):
    """Right queries [S, G] of the grid points [G, 3] by test_cache_search's plain loop (one candidate at a time,
    every class and key, torch.argmax)."""
    cand = points.unsqueeze(0).expand(base.shape[0], -1, -1)
    return exhaustive_hits(base, y, aff, weight, div, cand[..., 0], cand[..., 1], cand[..., 2], formula)


def hits_by(path, monkeypatch, base, y, aff, weight, div, points, formula="ape"):
    monkeypatch.setattr(cs, "DENSE_WORK", float("inf") if path == "dense" else -1.0)
    monkeypatch.setattr(cs, "DENSE_WORK_SPREAD", float("inf") if path == "dense" else -1.0)
    monkeypatch.setattr(cs, "DENSE_SHARE", 0.0)
    monkeypatch.setattr(cs, "DENSE_ELEMENTS", 1 << 10)                       # many slices of rows, γ, candidates
    problem = CacheFusion(base, y, lambda i, rows: aff[i, rows], weight, div, formula)
    cand = points.unsqueeze(0).expand(base.shape[0], -1, -1)
    got = problem.hits(cand[..., 0], cand[..., 1], cand[..., 2])
    share = problem.scored[-1]
    return got, share


@pytest.mark.parametrize("formula", ["ape", "tip"])
@pytest.mark.parametrize("seed,s,n,c,k", [(0, 2, 30, 5, 4), (1, 1, 64, 16, 1), (2, 3, 17, 9, 3), (3, 1, 50, 24, 8)])
def test_dense_equals_pruned_and_loop(monkeypatch, formula, seed, s, n, c, k):
    base, y, aff, weight, div = random_cache(seed, s, n, c, k)
    div = div if formula == "ape" else None
    points = grid([0.1 + 1.3 * i for i in range(6)], [0.0, 0.1, 0.7, 2.5, 6.0],
                  [0.0, 0.4, 1.1] if formula == "ape" else [0.0])
    dense, dense_share = hits_by("dense", monkeypatch, base, y, aff, weight, div, points, formula)
    pruned, pruned_share = hits_by("pruned", monkeypatch, base, y, aff, weight, div, points, formula)
    want = loop_hits(base, y, aff, weight, div, points, formula)
    assert torch.equal(dense, want)
    assert torch.equal(pruned, want)
    assert dense_share == 1.0 and pruned_share <= 1.0
    accuracy = dense.double() / (y >= 0).sum(-1, keepdim=True)
    assert torch.equal(first_best(accuracy, points.double(), 0.0).best,
                       first_best(pruned.double() / (y >= 0).sum(-1, keepdim=True), points.double(), 0.0).best)


def test_ties_go_to_the_first_class(monkeypatch):
    """Query 0 (label 1) ties class 0 whenever the zero-shot logits tie (α = 0): torch.argmax picks class 0,
    so it is wrong at α = 0 in both paths."""
    base, y, aff, weight, div = random_cache(5, 1, 20, 6, 2)
    base[0, 0, 0] = base[0, 0, 1]
    points = grid([1.0, 3.0], [0.0, 1.0], [0.0, 0.5])
    for path in ("dense", "pruned"):
        got, _ = hits_by(path, monkeypatch, base[:, :1], y[:, :1], aff[:, :1], weight, div, points)
        assert got.sum() == 0                                                 # class 0 == class 1 at every point
    dense, _ = hits_by("dense", monkeypatch, base, y, aff, weight, div, points)
    assert torch.equal(dense, loop_hits(base, y, aff, weight, div, points))


def test_cost_estimate_keeps_large_class_counts_pruned():
    """The official APE grid: 200 β × 20 α × 20 γ on a small problem goes dense; ImageNet's 1,000 classes
    (16 shots, γ 5 steps) on 1,000 queries stays pruned."""
    small = grid([float(i) for i in range(200)], [float(a) for a in range(20)], [0.1 * i for i in range(20)])
    assert dense_work((4, 101, 16), small[:, 0], small[:, 2]) <= cs.DENSE_WORK
    imagenet = grid([float(i) for i in range(200)], [float(a) for a in range(20)], [0.1 * i for i in range(5)])
    assert dense_work((1000, 1000, 16), imagenet[:, 0], imagenet[:, 2]) > cs.DENSE_WORK


def test_route_dense_for_ape_pruned_for_tip():
    """Default constants: APE's γ leaves the root pass every pair (dense: every pair scored), Tip-Adapter's
    bounds drop most pairs at the root (pruned: fewer pairs scored); both equal the plain loop."""
    base, y, aff, weight, div = random_cache(9, 1, 60, 40, 4)
    for formula, d, gammas in (("ape", div, [0.0, 0.5]), ("tip", None, [0.0])):
        points = grid([1.0, 3.0, 5.0], [0.5, 1.0, 2.0], gammas)
        problem = CacheFusion(base, y, lambda i, rows: aff[i, rows], weight, d, formula)
        cand = points.unsqueeze(0)
        got = problem.hits(cand[..., 0], cand[..., 1], cand[..., 2])
        assert torch.equal(got, loop_hits(base, y, aff, weight, d, points, formula))
        assert (problem.scored[-1] == 1.0) == (formula == "ape")


def test_spread_out_candidates_go_dense_at_imagenet_size():
    """The batched search's spread-out candidates (≈ 1 per β) on 4,000 queries of 1,000 classes × 16 keys are
    scored densely (each of their leaves would be a box of its own); the official grid's close leaves on the same
    problem (400 candidates per β) stay pruned, and so does the same spread-out set beyond DENSE_WORK_SPREAD."""
    g = torch.Generator().manual_seed(0)
    spread = torch.rand(470, 3, generator=g) * torch.tensor([7.0, 7.0, 1.0])
    assert cs._dense_pays((4000, 1000, 16), spread[:, 0], spread[:, 2])
    assert not cs._dense_pays((40000, 1000, 16), spread[:, 0], spread[:, 2])
    official = grid([0.1 + 0.0345 * i for i in range(200)], [0.1 + 0.345 * a for a in range(20)],
                    [0.05 * i for i in range(20)])
    assert not cs._dense_pays((4000, 1000, 16), official[:, 0], official[:, 2])
