"""bridge.cache_screen: APE's screened hit counts equal the plain exhaustive scoring (test_cache_search's loops over
every class and key) on random caches of several sizes, with γ, α = 0 ties, tied classes and padded keys; the bound
is an upper bound of the exact cache term; the path is the one cache_search takes for large chunks."""
import math

import pytest

import torch

import clipbridge.bridge.cache_screen as screen_module
import clipbridge.bridge.cache_search as cs
from clipbridge.bridge.cache_search import CacheFusion, exact_terms, key_factors, key_scales
from test_cache_search import candidates, exhaustive_hits, random_problem


def _screened(monkeypatch, base, y, aff, weight, div, beta, alpha, gamma):
    monkeypatch.setattr(cs, "SCREEN_PAIRS", 0)                                 # every chunk screened
    calls = []
    real = screen_module.screened_hits
    monkeypatch.setattr(screen_module, "screened_hits", lambda *a: calls.append(1) or real(*a))
    problem = CacheFusion(base, y, lambda i, rows: aff[i, rows], weight, div, "ape")
    got = problem.hits(beta, alpha, gamma)
    assert calls, "the screened path was not taken"
    return got


@pytest.mark.parametrize("seed,s,n,c,k,spread", [
    (0, 2, 60, 7, 3, 0.8), (1, 1, 150, 30, 4, 1.5), (2, 2, 120, 50, 2, 0.5), (4, 3, 40, 90, 1, 2.0),
    (5, 1, 200, 120, 6, 0.3)])
def test_screened_hits_equal_exhaustive(monkeypatch, seed, s, n, c, k, spread):
    base, y, aff, weight, div = random_problem(seed, s, n, c, k, formula="ape", spread=spread)
    beta, alpha, gamma = candidates(seed, s, 70, gamma=True)
    got = _screened(monkeypatch, base, y, aff, weight, div, beta, alpha, gamma)
    assert torch.equal(got, exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, "ape"))


def test_screened_hits_with_tied_classes_and_no_gamma(monkeypatch):
    """Duplicated classes (equal logits everywhere: the first one wins) and γ = 0 / no divergences."""
    base, y, aff, weight, div = random_problem(11, 2, 90, 20, 3, formula="ape", spread=0.6)
    c, k = 20, 3
    aff = aff.reshape(2, 90, c, k)
    aff[:, :, 5] = aff[:, :, 4]
    aff = aff.reshape(2, 90, c * k)
    base[:, :, 5] = base[:, :, 4]
    div = div.reshape(2, c, k)
    div[:, 5] = div[:, 4]
    div = div.reshape(2, c * k)
    y[0, :10] = 5                                                              # y ties a class before it
    y[1, :10] = 4                                                              # y ties a class after it
    beta, alpha, gamma = candidates(11, 2, 60, gamma=True)
    got = _screened(monkeypatch, base, y, aff, weight, div, beta, alpha, gamma)
    assert torch.equal(got, exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, "ape"))
    zero = torch.zeros_like(gamma)
    got = _screened(monkeypatch, base, y, aff, weight, None, beta, alpha, zero)
    assert torch.equal(got, exhaustive_hits(base, y, aff, weight, torch.zeros_like(div), beta, alpha, zero, "ape"))


def test_screen_bound_is_above_the_exact_cache_term():
    base, y, aff, weight, div = random_problem(3, 1, 50, 40, 5, formula="ape", spread=1.2)
    a, w, d = aff[0].reshape(50, 40, 5), weight[0].reshape(40, 5), div[0].reshape(40, 5)
    screen = screen_module.Screen(a, base[0], y[0].clamp_min(0), w, d, lambda x, b: key_factors(x, b, "ape"),
                                  lambda *t: key_scales(*t, 2, "ape"))
    for b, g in [(0.0, 0.0), (0.1, 1.0), (3.0, 0.5), (9.0, 0.0), (20.0, 2.0)]:
        f = exact_terms(a, w, d, torch.tensor([b]), torch.tensor([g]), "ape")[0]          # [n, C]
        total, coef = screen.gamma_terms(g)
        bound = screen._upper(screen.packed, b, total, coef) * math.exp(g * screen.shift) \
            * (1 + screen_module.RELATIVE_SLACK)
        assert bool((bound >= f).all())
        if b <= 3:                                                             # a bound, not a blank cheque
            assert float((bound / f).median()) < 2


@pytest.mark.parametrize("zone_alphas", [1, 4, 1000])
def test_screened_grid_equals_exhaustive(monkeypatch, zone_alphas):
    """An official-style grid (every α at each (β, γ), α = 0 included): α by α, or each query's interval of sure α."""
    monkeypatch.setattr(screen_module, "ZONE_ALPHAS", zone_alphas)
    base, y, aff, weight, div = random_problem(21, 2, 110, 40, 4, formula="ape", spread=0.7)
    axes = [torch.tensor(v) for v in ([0.0, 0.5, 2.0, 6.5], [0.0, 0.3, 1.0, 2.5, 6.0], [0.0, 0.2, 0.9])]
    grid = torch.cartesian_prod(*axes)
    beta, alpha, gamma = (grid[:, i].unsqueeze(0).expand(2, -1).contiguous() for i in range(3))
    got = _screened(monkeypatch, base, y, aff, weight, div, beta, alpha, gamma)
    assert torch.equal(got, exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, "ape"))


def test_signed_weights_are_not_screened(monkeypatch):
    """APE-T's trained weights may be negative: the chord bound would not hold, so such chunks take the other paths
    (and still equal the exhaustive scoring)."""
    monkeypatch.setattr(cs, "SCREEN_PAIRS", 0)
    calls = []
    monkeypatch.setattr(screen_module, "screened_hits", lambda *a: calls.append(1))
    base, y, aff, weight, div = random_problem(3, 1, 80, 12, 5, formula="ape", signed=True)
    beta, alpha, gamma = candidates(3, 1, 40, gamma=True)
    problem = CacheFusion(base, y, lambda i, rows: aff[i, rows], weight, div, "ape")
    assert torch.equal(problem.hits(beta, alpha, gamma),
                       exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, "ape"))
    assert not calls
