"""bridge.cache_search: the pruned hit counts equal an exhaustive scoring written here independently (plain
loops over candidates, every class and key), on random caches of several sizes, with signed weights, γ, ties;
and bridge.search's lazy secondary changes nothing."""
import math

import pytest
import torch

from clipbridge.bridge.cache_search import CacheFusion, CacheFusionScore
from clipbridge.bridge.search import batched_search


def random_problem(seed, s, n, c, k, d=24, formula="tip", signed=False, spread=0.8):
    g = torch.Generator().manual_seed(seed)
    text = torch.nn.functional.normalize(torch.randn(c, d, generator=g), dim=-1)
    y = torch.randint(0, c, (s, n), generator=g)
    y[:, -2:] = -1                                                            # padding rows
    q = torch.nn.functional.normalize(torch.randn(s, n, d, generator=g) + text[y.clamp_min(0)], dim=-1)
    keys = text.repeat_interleave(k, 0) + spread * torch.randn(s, c * k, d, generator=g)
    keys = torch.nn.functional.normalize(keys, dim=-1)
    weight = torch.ones(s, c * k)
    if k > 2:
        weight[:, k - 1::k] = 0                                               # a padded shot per class
    if signed:
        weight = torch.randn(s, c * k, generator=g)
    div = torch.rand(s, c * k, generator=g) * 3 if formula == "ape" else None
    return 100 * q @ text.T, y, q @ keys.transpose(1, 2), weight, div


def exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, formula):
    """Right queries per candidate: every class, every key, torch.argmax (first maximum)."""
    s_count, n, c = base.shape
    k = aff.shape[-1] // c
    out = torch.zeros(beta.shape, dtype=torch.int64)
    for s in range(s_count):
        for m in range(beta.shape[1]):
            b = beta[s, m]
            if formula == "tip":
                terms = torch.exp(-b * (1 - aff[s])) * weight[s]
            else:
                terms = torch.exp(b * aff[s] - b) * (weight[s] * torch.exp(div[s] * gamma[s, m]))
            logits = base[s] + alpha[s, m] * terms.reshape(n, c, k).sum(-1)
            out[s, m] = ((logits.argmax(-1) == y[s]) & (y[s] >= 0)).sum()
    return out


def candidates(seed, s, m, gamma=False, steps=(10, 5)):
    g = torch.Generator().manual_seed(seed + 1000)
    beta = (torch.rand(s, m, generator=g) * 10).round(decimals=0) / 10 * steps[0]
    alpha = (torch.rand(s, m, generator=g) * 5).round(decimals=1)
    alpha[:, :4] = 0                                                           # ties: α = 0 is zero-shot
    gam = (torch.rand(s, m, generator=g)).round(decimals=1) if gamma else torch.zeros(s, m)
    return beta, alpha, gam


@pytest.mark.parametrize("formula", ["tip", "ape"])
@pytest.mark.parametrize("seed,s,n,c,k,spread,signed", [
    (0, 2, 60, 7, 3, 0.8, False), (1, 1, 150, 30, 4, 1.5, False), (2, 2, 120, 50, 2, 0.5, False),
    (3, 1, 80, 12, 5, 1.0, True), (4, 3, 40, 90, 1, 2.0, False)])
def test_hits_equal_exhaustive(formula, seed, s, n, c, k, spread, signed):
    base, y, aff, weight, div = random_problem(seed, s, n, c, k, formula=formula, signed=signed, spread=spread)
    beta, alpha, gamma = candidates(seed, s, 70, gamma=formula == "ape")
    problem = CacheFusion(base, y, lambda i, rows: aff[i, rows], weight, div, formula)
    got = problem.hits(beta, alpha, gamma)
    assert torch.equal(got, exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, formula))
    assert 0.0 <= problem.scored[-1] <= 1.0
    again = problem.hits(beta, alpha, gamma)                                  # cached root pairs: same counts
    assert torch.equal(again, got)


def test_hits_with_a_search_box_and_chunked_rows(monkeypatch):
    import clipbridge.bridge.cache_search as cs

    monkeypatch.setattr(cs, "CHUNK_AFFINITY_ELEMENTS", 40 * 20 * 3)           # 40 rows per chunk
    base, y, aff, weight, div = random_problem(7, 2, 130, 20, 3)
    beta, alpha, gamma = candidates(7, 2, 50)
    problem = CacheFusion(base, y, lambda i, rows: aff[i, rows], weight, None, "tip", box=(0, 10, 0, 5, 0, 0))
    assert torch.equal(problem.hits(beta, alpha, gamma),
                       exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, "tip"))


def test_score_first_maximum_and_ties():
    """Equal accuracies at several candidates: the score gives them equal values, so the first is chosen."""
    base, y, aff, weight, _ = random_problem(11, 1, 100, 25, 3)
    beta = torch.tensor([[3.0, 0.0, 5.0, 7.0, 1.0]])
    alpha = torch.tensor([[0.0, 0.0, 0.0, 2.0, 1.0]])                         # three zero-shot ties first
    score = CacheFusionScore(CacheFusion(base, y, lambda i, rows: aff[i, rows], weight, None, "tip"), beta=0, alpha=1)
    acc = score.primary(torch.stack([beta, alpha], -1))
    assert acc[0, 0] == acc[0, 1] == acc[0, 2]
    expected = exhaustive_hits(base, y, aff, weight, None, beta, alpha, torch.zeros_like(beta), "tip")
    assert torch.equal(acc, 100.0 * expected.float() / (y >= 0).sum(-1, keepdim=True).float())


def test_mean_log_prob_matches_log_softmax():
    base, y, aff, weight, _ = random_problem(5, 2, 50, 9, 2)
    beta, alpha, gamma = candidates(5, 2, 6)
    got = CacheFusion(base, y, lambda i, rows: aff[i, rows], weight, None, "tip").mean_log_prob(beta, alpha, gamma)
    for s in range(2):
        for m in range(6):
            cache = (torch.exp(-beta[s, m] * (1 - aff[s])) * weight[s]).reshape(50, 9, 2).sum(-1)
            logp = torch.log_softmax(base[s] + alpha[s, m] * cache, -1)
            valid = y[s] >= 0
            want = logp[valid, y[s][valid]].mean()
            assert math.isclose(float(got[s, m]), float(want), rel_tol=1e-5)


class _Lazy:
    def __init__(self, f):
        self.f, self.secondary_calls = f, 0

    def primary(self, x):
        return self.f(x)[0]

    def secondary(self, x):
        self.secondary_calls += x.shape[1]
        return self.f(x)[1]


def test_lazy_secondary_gives_the_eager_result():
    """A coarse (heavily tied) primary and a smooth secondary: the lazy search picks exactly the same."""
    def f(x):
        primary = torch.floor(4 * torch.cos(x[..., 0]) * torch.sin(x[..., 1]))
        secondary = -(x[..., 0] - 1.3) ** 2 - (x[..., 1] - 0.7) ** 2
        return primary, secondary

    for seed in range(4):
        eager = batched_search(f, torch.zeros(2), 3 * torch.ones(2), num_seeds=3, rounds=4, per_round=32, seed=seed,
                               grid=torch.cartesian_prod(torch.linspace(0, 3, 5), torch.linspace(0, 3, 5)))
        lazy_score = _Lazy(f)
        lazy = batched_search(lazy_score, torch.zeros(2), 3 * torch.ones(2), num_seeds=3, rounds=4, per_round=32,
                              seed=seed, grid=torch.cartesian_prod(torch.linspace(0, 3, 5), torch.linspace(0, 3, 5)))
        assert torch.equal(eager.best, lazy.best) and torch.equal(eager.best_score, lazy.best_score)
        assert lazy_score.secondary_calls < 3 * (25 + 4 * 32)


@pytest.mark.parametrize("formula", ["tip", "ape"])
@pytest.mark.parametrize("seed,n,c,k", [(0, 37, 9, 3), (1, 70, 300, 4), (2, 20, 1000, 16), (3, 5, 11, 1)])
def test_leaf_cache_terms_are_exact_terms_bit_for_bit(formula, seed, n, c, k, monkeypatch):
    """Every leaf's F [n, C], computed slice by slice for all leaves in one buffer, equals exact_terms on the same
    row slices exactly (padded keys with weight 0, all-ones weights skipped, γ terms)."""
    import clipbridge.bridge.cache_search as cs

    monkeypatch.setattr(cs, "SECONDARY_ROWS", 7 * c * k)                      # 7 rows per slice, a short last one
    base, y, aff, weight, div = random_problem(seed, 1, n, c, k, formula=formula)
    beta, _, gamma = candidates(seed, 1, 9, gamma=formula == "ape")
    a = aff[0].reshape(n, c, k)
    for w in (weight[0].reshape(c, k), torch.ones(c, k)):
        d = None if div is None else div[0].reshape(c, k)
        got = cs.leaf_cache_terms(a, w, d, beta[0], gamma[0], formula)
        for j in range(beta.shape[1]):
            want = torch.cat([cs.exact_terms(a[i:i + 7], w, d, beta[0, j:j + 1], gamma[0, j:j + 1], formula)[0]
                              for i in range(0, n, 7)])
            assert torch.equal(got[j], want)


def test_mean_log_prob_of_repeated_candidates_and_any_thread_count():
    """Repeated candidates (bridge.search pads with them) get the value of their first copy; the values do not
    depend on torch's thread count (pieces run on one thread each) and equal the log-softmax reference."""
    base, y, aff, weight, _ = random_problem(8, 3, 60, 40, 3)
    beta, alpha, gamma = candidates(8, 3, 12)
    beta[:, 6:], alpha[:, 6:] = beta[:, :6], alpha[:, :6]                     # every candidate twice
    threads = torch.get_num_threads()
    values = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            problem = CacheFusion(base, y, lambda i, rows: aff[i, rows], weight, None, "tip")
            values.append(problem.mean_log_prob(beta, alpha, gamma))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(values[0], values[1]) and torch.equal(values[0], values[2])
    assert torch.equal(values[0][:, 6:], values[0][:, :6])
    for s in range(3):
        for m in range(6):
            cache = (torch.exp(-beta[s, m] * (1 - aff[s])) * weight[s]).reshape(60, 40, 3).sum(-1)
            logp = torch.log_softmax(base[s] + alpha[s, m] * cache, -1)
            valid = y[s] >= 0
            assert math.isclose(float(values[0][s, m]), float(logp[valid, y[s][valid]].mean()), rel_tol=1e-5)


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_hits_in_pieces_equal_exhaustive_at_any_thread_count(threads, monkeypatch):
    """The queries of each seed are cut into more pieces the more threads there are (and row chunks on top):
    the counts stay those of the exhaustive scoring."""
    import clipbridge.bridge.cache_search as cs

    monkeypatch.setattr(cs, "CHUNK_AFFINITY_ELEMENTS", 50 * 25 * 3)         # 50 rows per chunk
    base, y, aff, weight, div = random_problem(9, 2, 131, 25, 3)
    beta, alpha, gamma = candidates(9, 2, 60)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        problem = CacheFusion(base, y, lambda i, rows: aff[i, rows], weight, None, "tip")
        got = problem.hits(beta, alpha, gamma)
        assert len(problem._pieces()) >= min(2 * threads, 131 * 2)
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(got, exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, "tip"))
@pytest.mark.parametrize("seed,c,k,offset", [(21, 40, 4, 9.5), (22, 15, 3, -2.0), (23, 60, 2, 30.0)])
def test_hits_equal_exhaustive_with_large_close_divergences(seed, c, k, offset, monkeypatch):
    """APE's divergences on many classes are large and close together (≈ 9.5-10): the bounds fold their common
    part exp(γ·min d) into α (cache_search.divergence_shift); hits still equal the exhaustive scoring, also with
    a negative smallest divergence, a padded key (weight 0, divergence 0) per class and a γ = 0 edge (pruned path)."""
    import clipbridge.bridge.cache_search as cs

    monkeypatch.setattr(cs, "DENSE_WORK", 0)
    monkeypatch.setattr(cs, "DENSE_WORK_SPREAD", 0)
    base, y, aff, weight, div = random_problem(seed, 2, 90, c, k, formula="ape", spread=1.2)
    div = offset + 0.5 * div / 3 if offset > 0 else offset + div
    div = div * (weight != 0)                                                 # padded keys: d = 0
    beta, alpha, gamma = candidates(seed, 2, 80, gamma=True)
    if offset > 20:
        gamma = gamma / 10                                                    # keep exp(γ d) finite in float32
    gamma[:, 5:9] = 0
    problem = CacheFusion(base, y, lambda i, rows: aff[i, rows], weight, div, "ape")
    got = problem.hits(beta, alpha, gamma)
    assert torch.equal(got, exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, "ape"))


def test_root_pass_of_the_search_box_is_computed_once_with_divergences():
    """Candidates inside the search box reuse its root pairs across calls (the box's α is the candidates' own,
    not the folded α·exp(γ·min d) the bounds use), and the hits still equal the exhaustive scoring."""
    base, y, aff, weight, div = random_problem(31, 1, 70, 12, 3, formula="ape")
    div = 9.5 + div / 6
    problem = CacheFusion(base, y, lambda i, rows: aff[i, rows], weight, div, "ape", box=(0.0, 10.0, 0.0, 5.0, 0.0, 1.0))
    for seed in (31, 32):
        beta, alpha, gamma = candidates(seed, 1, 40, gamma=True)
        got = problem.hits(beta, alpha, gamma)
        assert torch.equal(got, exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, "ape"))
    assert problem._seed_data                                               # pieces of seed 0's rows
    for data in problem._seed_data.values():
        assert list(data._roots) == [(0.0, 10.0, 0.0, 5.0, 0.0, 1.0)]
