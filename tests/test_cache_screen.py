"""bridge.cache_screen: APE's screened hit counts equal the plain exhaustive scoring (test_cache_search's loops over
every class and key) on random caches of several sizes, with γ, α = 0 ties, tied classes and padded keys; the bound
is an upper bound of the exact cache term; the path is the one cache_search takes for large chunks."""
import math

import pytest

import torch

import clipbridge.bridge.cache_screen as screen_module
import clipbridge.bridge.cache_suspects as suspects_module
import clipbridge.bridge.cache_search as cs
from clipbridge.bridge.cache_search import CacheFusion, exact_terms, key_factors, key_scales
from test_cache_search import candidates, exhaustive_hits, random_problem
from test_precision import reduced_products


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


# ------------------------------------------------------------------ only the candidates that can be the best
def _problem(monkeypatch, base, y, aff, weight, div):
    monkeypatch.setattr(cs, "SCREEN_PAIRS", 0)                                 # every chunk screened
    return CacheFusion(base, y, lambda i, rows: aff[i, rows], weight, div, "ape")


def test_open_counts_bound_every_candidates_hits(monkeypatch):
    base, y, aff, weight, div = random_problem(31, 2, 120, 40, 4, formula="ape", spread=0.7)
    beta, alpha, gamma = candidates(31, 2, 60, gamma=True)
    exact = exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, "ape")
    upper, _ = _problem(monkeypatch, base, y, aff, weight, div)._open_counts(beta, alpha, gamma)
    assert bool((upper >= exact).all())
    assert bool((upper < (y >= 0).sum(1, keepdim=True)).any())                  # a bound that bites somewhere


@pytest.mark.parametrize("seed,tied", [(33, False), (34, True), (35, True)])
def test_open_queries_leave_open_every_query_the_witness_does_and_little_more(monkeypatch, seed, tied):
    """Screen.open_queries (a suspect's win proven on its half-line of α, with slack) counts at least the queries
    the exact witness leaves open at every α of a leaf, ties included (y tying a class before it: the witness
    calls that wrong, the slack must not), and at most 1 % more."""
    base, y, aff, weight, div = random_problem(seed, 2, 150, 30, 4, formula="ape", spread=0.7)
    if tied:
        c, k = 30, 4
        aff = aff.reshape(2, 150, c, k)
        aff[:, :, 5] = aff[:, :, 4]
        base[:, :, 5] = base[:, :, 4]
        div = div.reshape(2, c, k)
        div[:, 5] = div[:, 4]
        aff, div = aff.reshape(2, 150, c * k), div.reshape(2, c * k)
        y[:, :40] = 5
    problem = _problem(monkeypatch, base, y, aff, weight, div)
    alphas = torch.cat([torch.zeros(1), torch.linspace(0.1, 7, 25)])
    ours = theirs = 0
    for s, rows in problem._pieces():
        screen = problem._data(s, rows).screen()
        for beta, gamma in [(0.1, 0.0), (1.5, 0.4), (4.0, 1.0), (7.0, 0.0)]:
            b, g = torch.tensor(beta), torch.tensor(gamma)
            got, _ = screen.open_queries(b, g, alphas)
            _, _, wrong, _ = screen.witness(b, g, alphas)
            want = wrong.shape[1] - wrong.sum(1)
            assert bool((got >= want).all())
            ours, theirs = ours + int(got.sum()), theirs + int(want.sum())
    assert theirs <= ours <= 1.01 * theirs


def test_open_queries_are_the_queries_no_suspect_surely_beats(monkeypatch):
    """open_queries' two maxima equal the plain rule on every suspect and α: wrong iff some suspect with a finite
    slackened margin A has A + α·B > 0 (B = F_s·(1 − slack) − F_y·(1 + slack), float64), or is y's twin with equal
    F. Given terms include B = 0 (F_s = F_y = 0), equal F (twins), A = 0 (zero bases), α = 0 and large α."""
    base, y, aff, weight, div = random_problem(47, 1, 160, 30, 3, formula="ape", spread=0.7)
    c, k = 30, 3
    aff, div = aff.reshape(1, 160, c, k), div.reshape(1, c, k)
    aff[:, :, 5], base[:, :, 5], div[:, 5] = aff[:, :, 4], base[:, :, 4], div[:, 4]
    y[:, :30] = 5                                                             # y has a twin before it
    base[:, 30:50] = 0.0                                                      # every margin A = 0
    problem = _problem(monkeypatch, base, y, aff.reshape(1, 160, c * k), weight, div.reshape(1, c * k))
    screen = problem._data(0, slice(0, 160)).screen()
    n, t = screen.suspects.shape
    g = torch.Generator().manual_seed(47)
    f_y = torch.rand(n, generator=g) * 3
    f_s = torch.rand(n, t, generator=g) * 3
    f_s[:40, :2] = f_y[:40].unsqueeze(1)                                     # equal F: the twin's (and B < 0)
    f_y[60:80], f_s[60:80] = 0.0, 0.0                                        # B = 0
    monkeypatch.setattr(screen, "_witness_terms", lambda beta, gamma: (f_y, f_s))
    alphas = torch.tensor([0.0, 0.05, 0.3, 1.0, 2.5, 7.0, 40.0])
    got, _ = screen.open_queries(torch.tensor(1.0), torch.tensor(0.0), alphas)
    f64, slack = torch.float64, suspects_module.SURE_SLACK
    term = screen.term_slack
    by, bs = screen.base_y.to(f64).unsqueeze(1), screen.base_s.to(f64)
    margin = (bs - by) - slack * (bs.abs() + by.abs())
    slope = f_s.to(f64) * (1 - term) - f_y.to(f64).unsqueeze(1) * (1 + term)
    twin = screen.before & (bs == by) & (f_s == f_y.unsqueeze(1))
    want = []
    for a in alphas.tolist():
        wins = torch.isfinite(margin) & (margin + a * slope > 0) | twin
        want.append(n - int(wins.any(1).sum()))
    assert got.tolist() == want
    assert len(set(want)) > 3 and bool(twin.any()) and bool((margin == 0).any())


def _with_twin(base, y, aff, div, c, k):
    """Class 5 made a duplicate of class 4 (equal logits everywhere) and the true class of the first 40 queries."""
    s, n = y.shape
    aff, div = aff.reshape(s, n, c, k), div.reshape(s, c, k)
    aff[:, :, 5], base[:, :, 5], div[:, 5] = aff[:, :, 4], base[:, :, 4], div[:, 4]
    y[:, :40] = 5
    return base, y, aff.reshape(s, n, c * k), div.reshape(s, c * k)


def _grid(s, betas, alphas, gammas):
    """Candidates [S, M] of the product betas × alphas × gammas (β outer), as the official grid's."""
    grid = torch.cartesian_prod(torch.tensor(betas), torch.tensor(alphas), torch.tensor(gammas))
    return tuple(grid[:, i].unsqueeze(0).expand(s, -1).contiguous() for i in range(3))


@pytest.mark.parametrize("seed,tied,rows,budget", [(51, False, 7, 32 << 20), (52, True, 16, 1), (53, True, 5, 20000)])
def test_open_counts_of_a_grid_by_batched_products_bound_the_hits_as_leaf_by_leaf(monkeypatch, seed, tied, rows,
                                                                                budget):
    """A grid's leaves fill their β × γ product, so open_counts bounds them by Suspects.product_maxima (row blocks of
    PRODUCT_ROWS with a remainder; blocks of β within PRODUCT_MAXIMA_BYTES: one β at a time, a few, all): every
    count is at least the exhaustive hits (twins and α = 0 included), the bound bites, and it is the leaf-by-leaf
    path's bound but where F's summation order alone decides (at most one query a candidate, rarely)."""
    c, k = 30, 4
    base, y, aff, weight, div = random_problem(seed, 2, 150, c, k, formula="ape", spread=0.7)
    if tied:
        base, y, aff, div = _with_twin(base, y, aff, div, c, k)
    beta, alpha, gamma = _grid(2, [0.1, 0.8, 2.2, 4.5, 7.0], [0.0, 0.4, 1.5, 3.0, 6.5], [0.0, 0.25, 0.5, 1.0])
    monkeypatch.setattr(suspects_module, "PRODUCT_ROWS", rows)
    monkeypatch.setattr(suspects_module, "PRODUCT_MAXIMA_BYTES", budget)
    calls = []
    real = suspects_module.Suspects.product_maxima
    monkeypatch.setattr(suspects_module.Suspects, "product_maxima", lambda *a: calls.append(a[1].numel()) or real(*a))
    problem = _problem(monkeypatch, base, y, aff, weight, div)
    upper, _ = problem._open_counts(beta, alpha, gamma)
    widest = {32 << 20: 5, 1: 1}.get(budget)                                    # β per product_maxima call
    assert calls and (max(calls) == widest if widest else 1 < max(calls) < 5)
    exact = exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, "ape")
    assert bool((upper >= exact).all())
    assert bool((upper < (y >= 0).sum(1, keepdim=True)).any())
    monkeypatch.setattr(suspects_module, "PRODUCT_FILL", 1e9)                    # every leaf on its own
    calls.clear()
    leafwise, _ = _problem(monkeypatch, base, y, aff, weight, div)._open_counts(beta, alpha, gamma)
    assert not calls
    assert int((upper - leafwise).abs().max()) <= 1 and int((upper != leafwise).sum()) <= 2


def _rounded_bmm(a, b):
    """torch.bmm summed in float64 and rounded once: a float32 summation order other than the exhaustive scoring's."""
    return torch.matmul(a.double(), b.double()).to(a.dtype)


def test_a_grid_bound_takes_no_twin_tie_from_the_batched_product(monkeypatch):
    """A suspect before y with y's base (a twin) beats y only where the exhaustive scoring's F ties y's. The batched
    product sums the keys in another order, so it can tie two F that the exhaustive scoring keeps apart (here class
    0's affinities are class 1's in another key order): those queries are right, and the grid's bound and top hits
    must stay the exhaustive scoring's."""
    n, c, k = 4000, 2, 16
    g = torch.Generator().manual_seed(0)
    a1 = torch.rand(n, k, generator=g) * 0.6 + 0.2
    a0 = a1.gather(1, torch.argsort(torch.rand(n, k, generator=g), 1))
    aff = torch.stack([a0, a1], 1)                                                 # [n, C, K]
    factors = torch.exp(aff - 1.0)                                                 # β = 1, γ = 0, weight 1
    exhaustive = factors.sum(-1)
    batched = _rounded_bmm(factors, torch.ones(n, k, 1)).squeeze(-1)
    keep = ((batched[:, 0] == batched[:, 1]) & (exhaustive[:, 0] < exhaustive[:, 1])).nonzero()[:, 0]
    assert keep.numel() > 20                                                       # such queries exist
    m = keep.numel()
    aff = aff[keep].reshape(1, m, c * k).contiguous()
    base, y = torch.full((1, m, c), 5.0), torch.ones(1, m, dtype=torch.int64)
    weight, div = torch.ones(1, c * k), torch.zeros(1, c * k)
    monkeypatch.setattr(torch, "bmm", _rounded_bmm)
    beta, alpha, gamma = _grid(1, [1.0, 1.5, 2.0, 3.0], [1.0], [0.0])
    exact = exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, "ape")
    assert int(exact[0, 0]) >= 0.9 * m                        # most are right (y's F above its twin's)
    upper, _ = _problem(monkeypatch, base, y, aff, weight, div)._open_counts(beta, alpha, gamma)
    assert bool((upper >= exact).all())
    got = _problem(monkeypatch, base, y, aff, weight, div).top_hits(beta, alpha, gamma, keep=1)
    assert torch.equal(got.argmax(1), exact.argmax(1)) and torch.equal(got[:, 0], exact[:, 0])


@pytest.mark.parametrize("kernel", ["emulated", "cast", "medium"])
@pytest.mark.parametrize("seed", [60, 61, 63])
def test_grid_bounds_hold_whatever_product_precision_the_fit_runs_at(monkeypatch, seed, kernel):
    """A fit at --precision bf16 runs the search under a product mode, and torch.set_float32_matmul_precision
    ("medium") sends float32 products to bf16 on CPUs with oneDNN's bf16 GEMM. The exhaustive scoring's sums are
    elementwise (no mode touches them), so the bounds' own products (the grid's batched product, the screen's
    moments and D(γ)) must stay float32: every bound holds and top hits choose as the exhaustive scoring."""
    c, k = 30, 4
    base, y, aff, weight, div = random_problem(seed, 2, 150, c, k, formula="ape", spread=0.7)
    beta, alpha, gamma = _grid(2, [0.1, 0.8, 2.2, 4.5, 7.0], [0.0, 0.4, 1.5, 3.0, 6.5], [0.0, 0.25, 0.5, 1.0])
    exact = exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, "ape")
    with reduced_products(kernel):
        upper, _ = _problem(monkeypatch, base, y, aff, weight, div)._open_counts(beta, alpha, gamma)
        got = _problem(monkeypatch, base, y, aff, weight, div).top_hits(beta, alpha, gamma, keep=1)
    assert bool((upper >= exact).all())
    assert torch.equal(got.argmax(1), exact.argmax(1))
    best = exact.amax(1, keepdim=True)
    assert torch.equal(got[exact >= best], exact[exact >= best])


def test_top_hits_of_a_grid_are_exact_where_they_can_be_the_first_maximum(monkeypatch):
    """The official grid's case (leaves filling their product, so bounded by batched products): the first maximum
    and every count that reaches it are the exhaustive scoring's, twins included."""
    c, k = 40, 3
    base, y, aff, weight, div = random_problem(54, 2, 140, c, k, formula="ape", spread=0.6)
    base, y, aff, div = _with_twin(base, y, aff, div, c, k)
    beta, alpha, gamma = _grid(2, [0.1, 1.0, 2.5, 5.0, 7.0, 9.0], [0.0, 0.5, 2.0, 4.0], [0.0, 0.3, 0.9])
    exact = exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, "ape")
    got = _problem(monkeypatch, base, y, aff, weight, div).top_hits(beta, alpha, gamma, keep=1)
    best = exact.amax(1, keepdim=True)
    assert torch.equal(got[exact >= best], exact[exact >= best])
    assert bool((got[exact < best] < best.expand_as(got)[exact < best]).all())
    assert torch.equal(got.argmax(1), exact.argmax(1))


@pytest.mark.parametrize("seed,keep,known", [(40, 1, 0), (41, 8, 0), (42, 8, 8), (43, 3, 2)])
def test_top_hits_are_exact_wherever_a_candidate_can_be_among_the_best(monkeypatch, seed, keep, known):
    """Exact for every candidate whose count reaches the keep-th largest of the known counts and all of these;
    every other candidate below that (so the first maximum, the top `keep` and their ties are those of hits)."""
    base, y, aff, weight, div = random_problem(seed, 2, 140, 50, 3, formula="ape", spread=0.6)
    beta, alpha, gamma = candidates(seed, 2, 80, gamma=True)
    alpha[:, 5:9] = alpha[:, 1:2]                                              # repeated candidates: tied counts
    beta[:, 5:9], gamma[:, 5:9] = beta[:, 1:2], gamma[:, 1:2]
    exact = exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, "ape")
    g = torch.Generator().manual_seed(seed)
    elites = exact.topk(known, 1).values - torch.randint(0, 3, (2, known), generator=g) if known else None
    problem = _problem(monkeypatch, base, y, aff, weight, div)
    got = problem.top_hits(beta, alpha, gamma, keep=keep, known=elites)
    every = exact if elites is None else torch.cat([elites, exact], 1)
    floor = every.topk(keep, 1).values[:, -1:]
    contenders = exact >= floor
    assert torch.equal(got[contenders], exact[contenders])
    assert bool((got[~contenders] < floor.expand_as(got)[~contenders]).all())
    assert torch.equal(got.argmax(1), exact.argmax(1))
    assert problem.scored[-1] < 1.0                                              # most candidates were not scored


def test_top_hits_count_a_candidate_whose_bound_equals_the_best_count(monkeypatch):
    """A candidate left after the first round with a bound equal to the best count known could tie the best: it is
    counted exactly, not given its bound."""
    base, y, aff, weight, div = random_problem(46, 1, 120, 30, 3, formula="ape", spread=0.6)
    beta, alpha, gamma = candidates(46, 1, 40, gamma=True)
    exact = exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, "ape")
    order = torch.argsort(-exact[0], stable=True)
    best, weaker = int(order[0]), order[exact[0, order] < exact[0, order[0]]]
    tied_bound = int(weaker[0])                                  # bound = the best count, exact count below it
    first_round = [best] + weaker[1:cs.TOP_FIRST_BATCH].tolist()  # the first round's 8 largest bounds
    upper = exact.clone()
    upper[0, first_round] = exact[0, best] + 1
    upper[0, tied_bound] = exact[0, best]
    problem = _problem(monkeypatch, base, y, aff, weight, div)
    monkeypatch.setattr(CacheFusion, "_open_counts", lambda self, *a, **k: (upper.clone(), 0.0))
    got = problem.top_hits(beta, alpha, gamma, keep=1)
    assert int(got[0, tied_bound]) == int(exact[0, tied_bound]) < int(exact[0, best])
    assert int(got.argmax(1)) == int(exact.argmax(1))


def test_top_hits_without_kept_affinities_keep_only_the_suspects_and_stay_exact(monkeypatch):
    """Affinities too large to keep (ImageNet's 50,000 validation queries): each piece's suspects (narrow and wide)
    are made once and kept without its affinities; the bound still spares most candidates their exact count, and the counts that can
    be the best are exact (several row chunks, 2 seeds, tied candidates)."""
    monkeypatch.setattr(cs, "KEEP_AFFINITY_BYTES", 0)
    monkeypatch.setattr(cs, "CHUNK_AFFINITY_ELEMENTS", 45 * 50 * 3)                 # 45-row chunks
    base, y, aff, weight, div = random_problem(47, 2, 140, 50, 3, formula="ape", spread=0.6)
    beta, alpha, gamma = candidates(47, 2, 80, gamma=True)
    beta[:, 5:9], alpha[:, 5:9], gamma[:, 5:9] = beta[:, 1:2], alpha[:, 1:2], gamma[:, 1:2]
    exact = exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, "ape")
    problem = _problem(monkeypatch, base, y, aff, weight, div)
    assert not problem.keep and problem.rows() == 45
    made = []
    init = suspects_module.Suspects.__init__
    monkeypatch.setattr(suspects_module.Suspects, "__init__", lambda self, *a, **k: made.append(type(self)) or init(self, *a, **k))
    for _ in range(2):                                                           # the second call reuses them
        got = problem.top_hits(beta, alpha, gamma, keep=1)
        floor = exact.max(1, keepdim=True).values
        contenders = exact >= floor
        assert torch.equal(got[contenders], exact[contenders])
        assert bool((got[~contenders] < floor.expand_as(got)[~contenders]).all())
        assert problem.scored[-1] < 1.0
    kept = problem._kept_suspects
    assert sorted(kept) == sorted((s, r.start, r.stop) for s, r in problem._pieces()) and made.count(suspects_module.Suspects) == 2 * len(kept)
    assert all(not hasattr(suspects, "aff") for pair in kept.values() for suspects in pair)     # narrow, wide


def test_the_wide_suspects_spare_exact_counts_and_keep_them_exact(monkeypatch):
    """top_hits tightens the bound of the candidates that reach the best count with the wide suspects before it
    counts any exactly: where the narrow bound is loose (one suspect per proxy here), far fewer candidates are
    counted than with it alone, and the counts that can be the best are the same exact ones."""
    monkeypatch.setattr(suspects_module, "SUSPECTS_PER_PROXY", 1)
    base, y, aff, weight, div = random_problem(51, 2, 400, 80, 4, formula="ape", spread=2.0)
    grid = torch.cartesian_prod(torch.linspace(0.5, 6, 10), torch.linspace(0.5, 6, 6), torch.linspace(0, 1, 5))
    beta, alpha, gamma = (grid[:, i].unsqueeze(0).expand(2, -1).contiguous() for i in range(3))
    exact = exhaustive_hits(base, y, aff, weight, div, beta, alpha, gamma, "ape")
    floor = exact.max(1, keepdim=True).values
    counted = {}
    count = CacheFusion._count
    for wide in (1, 15):
        monkeypatch.setattr(suspects_module, "WIDE_SUSPECTS_PER_PROXY", wide)
        monkeypatch.setattr(CacheFusion, "_count", lambda self, b, a, g, pick=None: counted.setdefault(
            wide, []).append(sum(p.numel() for p in pick)) or count(self, b, a, g, pick))
        got = _problem(monkeypatch, base, y, aff, weight, div).top_hits(beta, alpha, gamma, keep=1)
        assert torch.equal(got[exact >= floor], exact[exact >= floor]) and torch.equal(got.argmax(1), exact.argmax(1))
        assert bool((got[exact < floor] < floor.expand_as(got)[exact < floor]).all())
    assert 2 * sum(counted[15]) < sum(counted[1])                                # 16 against 76 candidates


def test_top_hits_fall_back_to_hits_where_nothing_is_screened():
    base, y, aff, weight, div = random_problem(44, 2, 60, 12, 3, formula="tip", spread=0.7)
    beta, alpha, gamma = candidates(44, 2, 30, gamma=False)
    problem = CacheFusion(base, y, lambda i, rows: aff[i, rows], weight, None, "tip")
    assert torch.equal(problem.top_hits(beta, alpha, gamma, keep=1), problem.hits(beta, alpha, gamma))


def test_searches_asking_only_for_the_best_candidates_choose_as_with_every_count(monkeypatch):
    """The batched search (elites = 8) and the official grid (first maximum) choose the same (β, α, γ) and score when
    only the candidates that can be among the best are counted exactly."""
    from clipbridge.bridge.cache_search import CacheFusionScore
    from clipbridge.bridge.fusion import first_best
    from clipbridge.bridge.search import batched_search

    # loose bounds, 3 suspects a proxy: with more, at 40 classes the bounds equal most counts, and a search asking
    # for fewer exact counts than it needs (the mutation "bounded primary asked for the best one only") would pass
    monkeypatch.setattr(suspects_module, "SUSPECTS_PER_PROXY", 3)
    monkeypatch.setattr(suspects_module, "WIDE_SUSPECTS_PER_PROXY", 3)
    base, y, aff, weight, div = random_problem(45, 3, 150, 40, 4, formula="ape", spread=0.7)
    problem = _problem(monkeypatch, base, y, aff, weight, div)
    score = CacheFusionScore(problem, beta=0, alpha=1, gamma=2)
    low, high = torch.tensor([0.1, 0.1, 0.0]), torch.tensor([7.0, 7.0, 1.0])
    import clipbridge.bridge.search as search_module

    pools, counted = [], []                     # every round's elites in order; candidates counted exactly
    merge, screened = search_module._Pool.merge, screen_module.screened_hits
    monkeypatch.setattr(screen_module, "screened_hits", lambda sc, b, *a: counted.append(b.shape[0]) or screened(sc, b, *a))
    monkeypatch.setattr(search_module._Pool, "merge",
                        lambda self, *a, **k: pools.append(merge(self, *a, **k)) or pools[-1])
    bounded = batched_search(score, low, high, num_seeds=3, rounds=4, per_round=40, seed=[1, 2, 3])
    bounded_pools, pools[:], bounded_counted, counted[:] = list(pools), [], sum(counted), []
    monkeypatch.delattr(CacheFusionScore, "bounded_primary")
    every = batched_search(score, low, high, num_seeds=3, rounds=4, per_round=40, seed=[1, 2, 3])
    assert torch.equal(bounded.best, every.best) and torch.equal(bounded.best_score, every.best_score)
    for ours, theirs in zip(bounded_pools, pools, strict=True):                # the same elites, values and order
        assert torch.equal(ours.points, theirs.points) and torch.equal(ours.primary, theirs.primary)
    assert bounded_counted < sum(counted) / 2                                  # counting under half the candidates
    grid = torch.cartesian_prod(*[torch.linspace(0.1, 7, 9), torch.linspace(0.1, 7, 8), torch.linspace(0, 1, 5)])
    cand = grid.unsqueeze(0).expand(3, -1, -1)
    split = (cand[..., 0].contiguous(), cand[..., 1].contiguous(), cand[..., 2].contiguous())
    count = (y >= 0).sum(1, keepdim=True).to(base.dtype)
    top = first_best(100.0 * problem.top_hits(*split, keep=1).to(base.dtype) / count, grid, 0.0)
    full = first_best(100.0 * problem.hits(*split).to(base.dtype) / count, grid, 0.0)
    assert torch.equal(top.best, full.best) and torch.equal(top.val_accuracy, full.val_accuracy)


def test_distinct_per_row_keeps_each_rows_set_once_and_pads_with_its_first_entry():
    classes = torch.tensor([[4, 2, 4, 9], [1, 1, 1, 1], [7, 3, 5, 3], [0, 6, 8, 2]])
    got = suspects_module.distinct_per_row(classes)
    assert got.shape == (4, 4)                                                 # the widest row: 4 distinct
    for row, want in zip(got.tolist(), ([2, 4, 9], [1], [3, 5, 7], [0, 2, 6, 8])):
        assert row[:len(want)] == want and set(row[len(want):]) <= {want[0]}
    assert suspects_module.distinct_per_row(classes[:2]).tolist() == [[2, 4, 9], [1, 1, 1]]
    assert suspects_module.distinct_per_row(classes[:0]).shape == (0, 4)


def test_suspects_are_the_union_of_the_four_proxies_picks_without_repeats():
    base, y, aff, weight, div = random_problem(36, 1, 80, 25, 3, formula="ape", spread=0.7)
    a, b, yy = aff[0].reshape(80, 25, 3), base[0], y[0]
    got = suspects_module.suspect_classes(a, a.amax(-1), b, yy, 4)
    soft = torch.exp(a * suspects_module.SUSPECT_BETA - suspects_module.SUSPECT_BETA).sum(-1)
    assert got.shape[1] < 16                                                   # the proxies agree somewhere
    for i in range(80):
        want = set()
        for proxy in (b, a.mean(-1), a.amax(-1), soft):
            p = proxy[i].clone()
            p[yy[i]] = -math.inf
            want |= set(p.topk(4).indices.tolist())
        assert set(got[i].tolist()) == want and int(yy[i]) not in want


@pytest.mark.parametrize("budget", [1, 64 << 20])
def test_witness_terms_kept_across_leaves_equal_the_leafs_own_exact_terms(monkeypatch, budget):
    """Screen._witness_terms keeps the last β's key factors and recent γs' gathered scales (WITNESS_SCALE_BYTES,
    the oldest γ dropped first); walked β-major over a grid, as open_counts does, every leaf's terms are those of
    Screen._exact at that leaf alone, bit for bit."""
    monkeypatch.setattr(suspects_module, "WITNESS_SCALE_BYTES", budget)
    base, y, aff, weight, div = random_problem(37, 1, 90, 20, 4, formula="ape", spread=0.7)
    problem = _problem(monkeypatch, base, y, aff, weight, div)
    s, rows = problem._pieces()[0]
    screen = problem._data(s, rows).screen()
    for beta in (0.5, 2.0, 6.0):
        for gamma in (0.0, 0.3, 1.0, 0.3):
            b, g = torch.tensor(beta), torch.tensor(gamma)
            f_y, f_s = screen._witness_terms(b, g)
            assert torch.equal(f_y, screen._exact(screen.aff_y, screen.y, b, g))
            assert torch.equal(f_s, screen._exact(screen.aff_s, screen.suspects, b, g))
    assert len(screen._witness_scales) == (1 if budget == 1 else 3)


def test_an_alpha_of_minus_zero_leaves_open_what_zero_does():
    """α = −0.0 weighs the cache term by zero, as α = 0: the suspects ahead of y by base (a finite ahead) and a twin
    (ahead = +∞) beat it, the ones behind do not. Its reciprocal −∞ would take the ones behind as winners instead."""
    ahead = torch.tensor([-0.5, 2.0, -math.inf, math.inf], dtype=torch.float64)
    behind = torch.tensor([0.3, -math.inf, 7.0, -math.inf], dtype=torch.float64)
    got = suspects_module.open_at(ahead, behind, torch.tensor([-0.0, 0.0, 0.5]))
    assert got.tolist() == [1, 1, 0]
