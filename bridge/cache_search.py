"""Exact validation scoring of cache-fusion candidates that scores only the (query, class) pairs that can
change a top-1 decision (Tip-Adapter's (β, α), APE's (β, α, γ), APE-T's (β, α)).

For one seed, with validation queries n (label y_n), classes c and each class's cache keys k:

    logits_nc(β, α, γ) = base_nc + α · F_nc(β, γ),   F_nc(β, γ) = Σ_{k of c} w_k · exp(γ·d_k) · exp(β·(a_nk − 1))

(a = query-key affinity, w = key weight, d = key divergence; Tip-Adapter: w = 1 for real keys, d = 0). The
hit count of a candidate is the number of real queries whose arg-max (first maximum, as torch.argmax) is y.

Bounds (float64, widened by a slack of 64 ulp of the working dtype times the magnitudes involved, far above
the rounding of the float scoring). Over a box of candidates [β0, β1] × [α0, α1] × [γ0, γ1], F_nc and F_ny are
bounded by functions linear in β, so l_c − l_y is bounded at the box's corners:
  - monotone case (w, d ≥ 0, a ≤ 1, β ≥ 0; Tip-Adapter and APE): F_y from its exact key terms (secant above,
    tangent at the middle below: F is convex in β); F_c from the class's largest and smallest affinity and its
    weighted sum of affinities (the chord through the extremes above, Jensen's inequality below: each term is
    convex in a), the sums taken at γ rounded outwards to a ladder so that few are ever computed;
  - otherwise (e.g. APE-T's signed weights): per-term extremes at the corners (exp of a linear exponent).
With divergences (APE) the bounds are of G = exp(−γ·d₀)·F, d₀ = the smallest divergence of a real key
(`divergence_shift`: key weights w·exp(γ (d − d₀)), shifted d ≥ 0), and α is replaced by α·exp(γ·d₀) (per
candidate, and its range over a box, `folded_alphas`): l_c − l_y = (base_c − base_y) + α·exp(γ d₀)·(G_c − G_y)
exactly, and a box's γ range loosens G's bounds by exp(Δγ·(d − d₀)) instead of exp(Δγ·d) (APE's d ≈ 9.5-10 on
1,000 synthetic classes: e^0.05 instead of e^1 for Δγ = 0.1).
Per box:
  - a pair (n, c) whose l_c − l_y < 0 everywhere in the box cannot change query n's decision: dropped;
  - a query with a class that beats y everywhere is wrong for every candidate in the box;
  - a query with no pair left is right for every candidate in the box (counted without scoring).
The pairs that can matter anywhere in the search box are found once (a float32 pass over slices of β with
a wide slack, cached), then candidates are sorted by (γ, β) ("leaves": distinct (β, γ)); boxes are ranges
of leaves, split in halves while queries stay undecided. At a small enough range each (query, candidate)
is decided by the α-interval where the bounds already decide it (α ≥ 0), and the rest are scored exactly, in
the working dtype with the exhaustive scoring's formula (`formula`) on the query's remaining pairs, with
torch.argmax's tie rule (a class before y wins a tie, a class after y loses it). The hits therefore equal the
exhaustive scoring of all classes except where float rounding alone decides (a class within rounding of y,
which the exhaustive scoring itself resolves by summation order).

The secondary score (mean true-class log-probability, bridge.fusion.validation_scores) is scored over every
class for the candidates bridge.search asks it for (CacheFusionScore is a LazyScore): per row slice of
SECONDARY_ROWS affinities the cache terms of every distinct (β, γ) while the slice is in cache
(`leaf_cache_terms`, bit for bit exact_terms on that slice), then the log-softmax once per distinct (β, γ, α).

Work runs in independent pieces side by side (bridge.threads.map_single_threaded), each on one torch thread:
the hits by (seed, part of a row chunk), the secondary by (seed, group of leaves). A query's hits do not depend
on its piece and a candidate's secondary is computed by one piece alone, so the results do not depend on the
number of threads or pieces.

Dense path (`dense_hits`, chosen per seed and query chunk when the root pass keeps at least DENSE_SHARE of the
pairs, i.e. the bounds decide little, as for APE, and `dense_work` ≤ DENSE_WORK, a small problem, or
≤ DENSE_WORK_SPREAD for candidates spread out in β, whose leaves would each be a box of its own): every pair
is scored, the key factors once per distinct β, the cache term F [n, C] once per (β, γ) with exact_terms'
operations (key_factors × key_scales summed over keys), the logits base + α·F of all the α of that (β, γ) at
once, and top-1 with torch.argmax's first-maximum rule (`first_max_is`): the same hits as the pruned path.

Screened path (`bridge.cache_screen`, APE with w ≥ 0 and β, α, γ ≥ 0, chosen per seed and query chunk of at least
SCREEN_PAIRS (query, class) pairs, e.g. 1,000 classes, or, for APE's official grid, of at least GRID_SCREEN_CLASSES
classes): a few suspect classes per query scored exactly (one that
beats y makes the query wrong), then a float32 chord bound per pair and leaf (its γ dependence by moments) decides
the rest, all α of a leaf at once and boxes of leaves together (convexity in β); the pairs it cannot decide are
scored exactly with exact_terms' operations: the same hits as the exhaustive scoring.

Only the candidates that can be among the best (`top_hits`, screened path): a search does not need every
candidate's count, only the counts of those that can be its answer — the official grid's first maximum, or the
batched search's elites (bridge.search, `CacheFusionScore.bounded_primary`). The suspects alone bound every
candidate's count from above (the queries no suspect beats: `cache_suspects.open_counts`; a grid's leaves all at
once, by batched products of every β's key factors and every γ's key scales); candidates are counted
exactly largest bound first, and those whose bound stays below the keep-th best count known get their bound
instead: they can neither be chosen nor tie with what is (APE at 1,000 classes: 99 of the batched search's 472
candidates counted exactly on one 2,000-query chunk). The candidates that reach the best count first get a
tighter bound from three times as many suspects (the official grid at 1,000 classes: 8 candidates a seed left
to count exactly instead of 362). The suspects keep none of the affinities, so they are kept
between calls also where the affinities are not (50,000 validation queries): then only the rounds of exact
counts compute the affinities again.

`scored`, `pairs`: exactly scored (query, class) pairs per candidate / (real queries × classes), the measure of
the pruning (1.0 = exhaustive).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from clipbridge.bridge import cache_screen, cache_suspects
from clipbridge.bridge.cache_screen import divergence_shift
from clipbridge.bridge.threads import map_single_threaded

FORMULAS = ("tip", "ape")
# bytes of affinities kept in memory between calls (beyond it they are recomputed per query chunk)
KEEP_AFFINITY_BYTES = 1 << 31
# rows of queries processed together (bounds the [rows, C·K] affinity slice)
CHUNK_AFFINITY_ELEMENTS = 1 << 27
# exact work (leaves × pairs × keys) below which a range of leaves is scored without splitting it further
LEAF_WORK = 1 << 20
# β slices of the search box on which the pairs that matter anywhere in it are found
ROOT_BLOCKS = 12
# affinities per row slice of the exhaustive secondary score (stays in cache)
SECONDARY_ROWS = 1 << 18
# bytes of cache terms F [n, C] the secondary score holds at once (one per distinct (β, γ) of the call)
SECONDARY_LEAF_BYTES = 1 << 28
# pairs per row slice of the root pass
ROOT_ROWS = 1 << 16
# relative slack of the float32 root pass (generous: it only keeps more pairs)
ROOT_SLACK = 1e-4
# dense work (dense_work: elements of the key terms and logits) of one seed's query chunk up to which its hits
# are counted densely (dense_hits) instead of by pruning. The official APE grid (200 × 20 × 20) on 404 queries of
# 101 classes (3.4e9 at 1 shot, 6.0e9 at 16) goes faster dense (FIGURES.md, issue 19); ImageNet's 1,000
# classes × 16 shots at ≥ 1,000 queries (3.9e10) stay pruned.
DENSE_WORK = 1 << 33
# ... and up to which spread-out candidates (at most DENSE_SPREAD per distinct β, e.g. the batched search's
# Sobol points) are: each of their leaves is a box of its own, whose bounds cost more than its dense scoring
# (APE's batched search on 4,000 queries of 1,000 classes × 16 keys, 4.9e10: 4-7× faster dense, FIGURES.md),
# while the official grid's close leaves (200 β × 20 α × 20 γ) prune in boxes of many leaves
DENSE_WORK_SPREAD = 1 << 36
DENSE_SPREAD = 8
# share of the (query, class ≠ y) pairs that the root pass keeps (they can matter somewhere in the search box) at
# and above which the dense path is taken: below it the pruned path decides most pairs by bounds
DENSE_SHARE = 0.25
# elements of the largest tensor the dense scoring builds at a time (bounds its memory; 4 MB slices stay in the
# CPU's cache: 1.7× faster than 16 MB ones on APE's C = 1,000 batched search, FIGURES.md)
DENSE_ELEMENTS = 1 << 20
# ... on a GPU, where each slice is a few kernel launches and memory is plenty: larger slices, and always dense
# (the pruned path's per-box Python and host synchronisations cost more there than scoring every pair)
DEVICE_DENSE_ELEMENTS = 1 << 27
# (query, class) pairs of a seed's query chunk from which APE's hits are counted by bridge.cache_screen (a float32
# bound per pair and leaf, exact suspects and undecided pairs) instead of densely or by boxes
SCREEN_PAIRS = 1 << 18
# ... or, for the searches that ask for it (CacheFusion.screen_classes: APE's official grid), from this many classes
# on whatever the chunk's size: the grid's 80,000 close candidates are bounded leaf by leaf far cheaper than boxes
# prune them (C = 100-200: 2-7× faster, FIGURES.md "Eighth stop"); below about 50 classes the boxes win, at 64 it
# is a toss-up. APE-T's grid is unmoved by it (measured at C = 100 and 200)
GRID_SCREEN_CLASSES = 100
# candidates per seed scored exactly in top_hits' first round (then twice as many each round); where the affinities
# are not kept each round computes every piece's affinities and screen again, so the first round is larger
TOP_FIRST_BATCH = 8
TOP_FIRST_BATCH_RECOMPUTED = 64
# validation queries up to which distinct hit counts have distinct float32 percentages (100·h/n: relative spacing
# 1/n, far above float32's 6e-8), so percentages can be turned back into counts and bounds stay strictly below
MAX_EXACT_PERCENT_QUERIES = 100_000
# elements of the key scales w·exp(γ d) [leaves, C, K] that the dense scoring keeps for all its row slices
DENSE_SCALES = 1 << 25


def on_gpu(x: Tensor) -> bool:
    """Whether x lives on an accelerator: there the searches score densely, in DEVICE_DENSE_ELEMENTS slices, with
    whole seeds and row chunks per piece (its kernels are wide already: no pruning, no splitting over CPU threads)."""
    return x.device.type != "cpu"


def slice_elements(x: Tensor, on_cpu: int) -> int:
    """Elements per slice of the work on x: `on_cpu` (sized for the CPU's cache) or DEVICE_DENSE_ELEMENTS on a GPU."""
    return DEVICE_DENSE_ELEMENTS if on_gpu(x) else on_cpu


def affinities_kept(seeds: int, queries: int, keys: int, element_size: int) -> bool:
    """Whether a search's [seeds, queries, keys] affinities fit KEEP_AFFINITY_BYTES, and so are kept whole."""
    return seeds * queries * keys * element_size <= KEEP_AFFINITY_BYTES


def _inside(inner: tuple, outer: tuple) -> bool:
    return all(o0 <= i0 and i1 <= o1 for i0, i1, o0, o1 in zip(inner[::2], inner[1::2], outer[::2], outer[1::2]))


def key_factors(aff: Tensor, beta: Tensor, formula: str) -> Tensor:
    """[L, ...] per-key affinity factors of leaves beta [L] for affinities aff [...]:
    tip: exp(−β (1 − a)) ;  ape: exp(β a − β)."""
    b = beta.view((-1,) + (1,) * aff.dim())
    if formula == "tip":
        return torch.exp(-b * (1 - aff.unsqueeze(0)))
    return torch.exp(b * aff.unsqueeze(0) - b)


def key_scales(weight: Tensor, div: Tensor | None, gamma: Tensor, dims: int, formula: str) -> Tensor:
    """Key scales broadcastable to [L, ...] (dims = the affinities' dimensions) of key weights and divergences
    (div may be None) at leaves gamma [L]: tip, or ape without div: w ;  ape: w · exp(d γ)."""
    if formula == "tip" or div is None:
        return weight
    return weight * torch.exp(div.unsqueeze(0) * gamma.view((-1,) + (1,) * dims))


def exact_terms(aff: Tensor, weight: Tensor, div: Tensor | None, beta: Tensor, gamma: Tensor, formula: str) -> Tensor:
    """F [L, ...] in the working dtype, as the exhaustive scorers compute it, for affinities aff [..., K], key
    weights and divergences broadcastable to it (div may be None) and leaves beta, gamma [L].
    tip: Σ_k exp(−β (1 − a)) · w ;  ape: Σ_k exp(β a − β) · (w · exp(d γ))."""
    return (key_factors(aff, beta, formula) * key_scales(weight, div, gamma, aff.dim(), formula)).sum(-1)


@dataclass
class CacheFusion:
    """The validation problem of one cache-fusion search, all seeds.

    base      [S, N, C] zero-shot logits of the validation queries (working dtype)
    labels    [S, N] (−1 = padding)
    affinity  affinity(s, rows) -> [n, C·K] affinities of seed s's queries `rows` (a slice) to its class-major keys
    weight    [S, C·K] key weights (0 = padded key)
    div       [S, C·K] key divergences, or None (no γ)
    formula   "tip" or "ape" (exact_terms)
    """

    base: Tensor
    labels: Tensor
    affinity: Callable[[int, slice], Tensor]
    weight: Tensor
    div: Tensor | None
    formula: str
    box: tuple | None = None      # (β0, β1, α0, α1, γ0, γ1) holding the candidates of most calls, or None
    screen_classes: int | None = None   # screen every chunk from this many classes on (`_screens`), or None
    scored: list = field(default_factory=list)       # scored shares of the hit counts of the calls so far
    pairs: list = field(default_factory=lambda: [0.0, 0.0])   # pairs scored (hits and secondary), pairs of hits
    _kept: dict = field(default_factory=dict)
    _seed_data: dict = field(default_factory=dict)
    _kept_suspects: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.formula not in FORMULAS:
            raise ValueError(f"unknown formula {self.formula!r}")
        s, n, c = self.base.shape
        self.keys = self.weight.shape[-1] // c
        self.keep = affinities_kept(s, n, c * self.keys, self.base.element_size())

    def rows(self) -> int:
        c = self.base.shape[-1]
        return max(1, CHUNK_AFFINITY_ELEMENTS // max(1, c * self.keys))

    def affinities(self, s: int, rows: slice) -> Tensor:
        """[n, C, K] affinities of seed s, rows `rows` (kept in memory when they fit KEEP_AFFINITY_BYTES)."""
        c = self.base.shape[-1]
        key = (s, rows.start, rows.stop)
        if key in self._kept:
            return self._kept[key]
        a = self.affinity(s, rows).reshape(-1, c, self.keys)
        if self.keep:
            self._kept[key] = a
        return a

    def _side_by_side(self, fn, items: list) -> list:
        """[fn(item) for item in items]: on the CPU side by side (bridge.threads.map_single_threaded); on a GPU one
        after the other (its kernels queue on one stream anyway, and pieces side by side would each hold their
        DEVICE_DENSE_ELEMENTS slices in its memory at once: Tip-Adapter's fit at 50,000 validation queries peaked
        at 41.6 GB on an H200 with 16 pieces side by side, FIGURES.md)."""
        return map_single_threaded(fn, items, workers=1 if on_gpu(self.base) else None)

    # ---- hits -------------------------------------------------------------------------------------------
    def hits(self, beta: Tensor, alpha: Tensor, gamma: Tensor) -> Tensor:
        """Right validation queries [S, M] (int64) of candidates beta, alpha, gamma [S, M]. The queries of each
        seed are split into independent pieces (`_pieces`) that run side by side
        (bridge.threads.map_single_threaded); a query's decisions do not depend on the piece it is in."""
        out, scored = self._count(beta, alpha, gamma)
        self._account(scored, beta.shape[1])
        return out

    def top_hits(self, beta: Tensor, alpha: Tensor, gamma: Tensor, keep: int, known: Tensor | None = None) -> Tensor:
        """hits [S, M] wherever a candidate's count can be among the `keep` largest of `known` [S, E] (counts kept
        from earlier calls, e.g. a search's elites; may be empty) and these candidates' counts; every other
        candidate gets an upper bound of its count that is below the keep-th largest of those, so it can be
        neither among them nor tied with them: the first maximum (keep = 1) and the top `keep` with their ties
        (bridge.search's elites) are those of `hits`. The bound (cache_suspects.open_counts: queries that no
        suspect class beats) needs APE's screen; elsewhere this is `hits`. Candidates are scored exactly in
        rounds, largest bound first, until no bound left reaches the keep-th largest count known; before a
        candidate is scored, its bound is tightened with the wide suspects (WIDE_SUSPECTS_PER_PROXY) and the order
        looked at again: for the next `wide_batch` loose candidates (4 times as many each time) whose bound reaches
        the batch-th largest tightened one, and the other candidates of their leaves (a leaf's α cost nothing more)."""
        s_count, m = beta.shape
        bounds = self._open_counts(beta, alpha, gamma)
        if bounds is None:
            return self.hits(beta, alpha, gamma)
        upper, scored = bounds
        known = torch.empty(s_count, 0, dtype=torch.int64) if known is None else known.to(torch.int64)
        done, tight = torch.zeros(s_count, m, dtype=torch.bool), torch.zeros(s_count, m, dtype=torch.bool)
        leaf = torch.stack([cache_suspects.leaf_index(beta[i], gamma[i])[1] for i in range(s_count)])   # [S, m]
        out = upper.clone()
        batch = max(keep, TOP_FIRST_BATCH if self.keep else TOP_FIRST_BATCH_RECOMPUTED)
        wide_batch = batch
        while True:
            exact = torch.cat([known, torch.where(done, out, -1)], 1)
            floor = exact.topk(min(keep, exact.shape[1]), 1).values[:, -1:] if exact.shape[1] >= keep \
                else torch.full((s_count, 1), -1, dtype=torch.int64)
            order = torch.argsort(-out, dim=1, stable=True)
            left = (~done & (out >= floor)).gather(1, order)                     # in order of the bounds
            if not bool(left.any()):
                break
            next_up = left & (left.cumsum(1) <= batch)
            unsure = left & ~tight.gather(1, order)                              # narrow bound only
            if bool((next_up & unsure).any()):
                # the wide suspects' bound first, then look again: for the next wide_batch loose candidates whose
                # bound reaches the batch-th largest tight one left (no other can come among the next batch)
                bound = out.gather(1, order)
                reach = torch.where(left & ~unsure, bound, -1).topk(min(batch, m), 1).values[:, -1:]
                unsure &= (unsure.cumsum(1) <= wide_batch) & (bound >= reach)
                loose = [(torch.isin(leaf[i], leaf[i, order[i][unsure[i]]]) & ~tight[i]).nonzero()[:, 0]
                         for i in range(s_count)]     # with the rest of their leaves (free); counted ones are tight
                tighter, work = self._open_counts(beta, alpha, gamma, loose, wide=True)
                for i, chosen in enumerate(loose):
                    out[i, chosen] = torch.minimum(out[i, chosen], tighter[i, chosen])
                    tight[i, chosen] = True
                scored += work
                wide_batch *= 4
                continue
            pick = [order[i][next_up[i]] for i in range(s_count)]
            counts, work = self._count(beta, alpha, gamma, pick)
            for i, chosen in enumerate(pick):
                out[i, chosen] = counts[i, chosen]
                done[i, chosen] = True
            scored += work
            batch *= 2
        self._account(scored, m)
        return out

    def _count(self, beta: Tensor, alpha: Tensor, gamma: Tensor, pick: list[Tensor] | None = None):
        """(hits [S, M], pairs scored exactly) of the candidates, or of seed i's candidates pick[i] only (the
        others 0)."""
        return self._sum_over_pieces(self._seed_hits, self._pieces(), beta, alpha, gamma, pick)

    def _open_counts(self, beta: Tensor, alpha: Tensor, gamma: Tensor, pick: list[Tensor] | None = None,
                     wide: bool = False) -> "tuple[Tensor, float] | None":
        """(cache_suspects.open_counts summed over each seed's pieces [S, M], pairs scored; with `pick`, of seed
        i's candidates pick[i] only, the others 0), or None unless every piece is screened (`_screens`). Each
        piece's suspects are kept between calls (`_suspects`); `wide`: the WIDE_SUSPECTS_PER_PROXY ones."""
        real = [((self.labels[s, rows] >= 0).sum().item(), s, rows) for s, rows in self._pieces()]
        pieces = [(s, rows) for n, s, rows in real if n]                                    # not all padding
        if not all(self._screens(s, n, beta[s], alpha[s], gamma[s]) for n, s, rows in real if n):
            return None
        return self._sum_over_pieces(lambda s, rows, *candidates: cache_suspects.open_counts(
            self._suspects(s, rows)[wide], *candidates), pieces, beta, alpha, gamma, pick)

    def _suspects(self, s: int, rows: slice) -> tuple[cache_suspects.Suspects, cache_suspects.Suspects]:
        """The suspects of seed s's real queries among `rows`, (narrow, wide): its kept screen and its wide
        suspects, or, where the affinities are not kept (ImageNet's 50,000 validation queries), both made once
        from the piece's affinities and kept without them (about 1.4 and 3.7 KB a query at 17 and 45 suspects,
        i.e. 5 and 15 per proxy, K = 16)."""
        if self.keep:
            data = self._data(s, rows)
            return data.screen(), data.wide_suspects()
        key = (s, rows.start, rows.stop)
        if key not in self._kept_suspects:
            data = self._data(s, rows)
            self._kept_suspects[key] = (data.suspects(), data.wide_suspects())
        return self._kept_suspects[key]

    def _sum_over_pieces(self, count, pieces: list, beta: Tensor, alpha: Tensor, gamma: Tensor,
                         pick: list[Tensor] | None = None) -> tuple[Tensor, float]:
        """(per-seed sums [S, M] of count(s, rows, beta, alpha, gamma) -> ([m] int64, pairs scored) over the
        (seed, rows) pieces, side by side; with `pick`, of seed i's candidates pick[i] only (the others 0),
        pairs scored)."""
        s_count = self.base.shape[0]
        out = torch.zeros(s_count, beta.shape[1], dtype=torch.int64, device=self.base.device)
        pick = pick or [None] * s_count
        chosen = lambda t, s: t[s] if pick[s] is None else t[s, pick[s]]            # noqa: E731
        results = self._side_by_side(lambda piece: count(
            piece[0], piece[1], chosen(beta, piece[0]), chosen(alpha, piece[0]), chosen(gamma, piece[0])), pieces)
        scored = 0.0
        for (s, _), (h, work) in zip(pieces, results):
            if pick[s] is None:
                out[s] += h
            else:
                out[s, pick[s]] += h
            scored += work
        return out, scored

    def _account(self, scored: float, m: int) -> None:
        """Record a call's pairs scored exactly against the exhaustive scoring's (every pair of its m candidates)."""
        s_count, _, c = self.base.shape
        total = float((self.labels >= 0).sum()) * c * m
        self.scored.append(scored / max(total, 1.0))
        self.pairs[0] += scored
        self.pairs[1] += total

    def _pieces(self) -> list[tuple[int, slice]]:
        """(seed, rows) pieces of the hit counts: each row chunk (`rows`) cut into as many parts as make at least
        two pieces per torch thread (the seeds alone would leave a thread idle, e.g. 3 seeds on 2; on a GPU whole
        chunks: its kernels are wide already), after the chunks' affinities are computed (side by side, once,
        when kept)."""
        s_count, n, _ = self.base.shape
        chunks = [(s, slice(r0, min(n, r0 + self.rows()))) for s in range(s_count) for r0 in range(0, n, self.rows())]
        if self.keep:
            missing = [(s, r) for s, r in chunks if (s, r.start, r.stop) not in self._kept]
            self._side_by_side(lambda chunk: self.affinities(*chunk), missing)
        parts = 1 if on_gpu(self.base) else max(1, -(-2 * torch.get_num_threads() // len(chunks)))
        pieces = []
        for s, rows in chunks:
            step = -(-(rows.stop - rows.start) // parts)
            pieces += [(s, slice(r0, min(rows.stop, r0 + step))) for r0 in range(rows.start, rows.stop, step)]
        return pieces

    def _seed_hits(self, s: int, rows: slice, beta: Tensor, alpha: Tensor, gamma: Tensor) -> tuple[Tensor, float]:
        m = beta.shape[0]
        data = self._data(s, rows)
        if data is None or m == 0:
            return torch.zeros(m, dtype=torch.int64, device=self.base.device), 0.0
        n, c, _ = data.aff.shape
        if on_gpu(data.aff):
            return dense_hits(data, beta, alpha, gamma), float(n * c * m)
        if self._screens(s, n, beta, alpha, gamma):
            return cache_screen.screened_hits(data.screen(), beta, alpha, gamma)
        problem = _Problem(data, beta, alpha, gamma)
        box = problem.box_of_all()
        if self.box is not None and _inside(box, self.box):
            box = self.box
        pairs = data.root_pairs(box)
        if pairs[0].numel() >= DENSE_SHARE * n * (c - 1) and _dense_pays(data.aff.shape, beta, gamma):
            return dense_hits(data, beta, alpha, gamma), float(n * c * m)
        return problem.solve(pairs)

    def _screens(self, s: int, n: int, beta: Tensor, alpha: Tensor, gamma: Tensor) -> bool:
        """Whether n real queries of seed s are counted by bridge.cache_screen: APE on the CPU, chunks of at least
        SCREEN_PAIRS (query, class) pairs or of at least screen_classes classes, the monotone case
        (cache_screen.applies)."""
        c = self.base.shape[-1]
        large = n * c >= SCREEN_PAIRS or (self.screen_classes is not None and c >= self.screen_classes)
        return (not on_gpu(self.base) and large
                and self.formula == "ape" and cache_screen.applies(self.weight[s], beta, alpha, gamma))

    def _data(self, s: int, rows: slice) -> "_SeedData | None":
        """The _SeedData of seed s's real queries among `rows` (inside one row chunk), kept when affinities are."""
        key = (s, rows.start, rows.stop)
        if key not in self._seed_data:
            y_all = self.labels[s, rows]
            real = (y_all >= 0).nonzero().squeeze(1)
            if real.numel() == 0:
                return None
            c, k = self.base.shape[-1], self.keys
            div = None if self.div is None else self.div[s].reshape(c, k)
            if self.keep:
                start = rows.start - rows.start % self.rows()                       # the row chunk holding rows
                chunk = self.affinities(s, slice(start, min(self.base.shape[1], start + self.rows())))
                aff = chunk[rows.start - start:rows.stop - start]
            else:
                aff = self.affinity(s, rows).reshape(-1, c, k)
            base = self.base[s, rows]
            if real.numel() < y_all.numel():
                aff, base = aff[real], base[real]
            data = _SeedData(aff, base, y_all[real], self.weight[s].reshape(c, k), div, self.formula)
            if not self.keep:
                return data
            self._seed_data[key] = data
        return self._seed_data[key]

    # ---- secondary score --------------------------------------------------------------------------------
    def mean_log_prob(self, beta: Tensor, alpha: Tensor, gamma: Tensor) -> Tensor:
        """Mean log-probability of the true class [S, M] (bridge.fusion.validation_scores' second score),
        scored over every class. Pieces of (seed, distinct (β, γ) leaves) run side by side
        (bridge.threads.map_single_threaded); each computes, per row chunk, the cache terms F [n, C] of its
        leaves (leaf_cache_terms), then per leaf the log-softmax of base + α·F at each distinct α of the leaf's
        candidates (bridge.search pads a seed's candidates by repeating one)."""
        s_count = self.base.shape[0]
        out = torch.zeros(s_count, beta.shape[1], dtype=self.base.dtype, device=self.base.device)
        pieces = []
        for s in range(s_count):
            if not bool(torch.isfinite(beta[s]).any()):                   # not needed (bridge.search.LazyScore)
                out[s] = float("nan")
                continue
            leaves, inverse = torch.unique(torch.stack([gamma[s], beta[s]], -1), dim=0, return_inverse=True)
            workers = 1 if on_gpu(self.base) else torch.get_num_threads()
            groups = max(1, min(leaves.shape[0], workers))                   # a seed's leaves over the workers
            pieces += [(s, leaves, inverse, part) for part in torch.arange(leaves.shape[0]).tensor_split(groups)]
        for (s, _, _, _), (cand, total, work) in zip(pieces, self._side_by_side(
                lambda piece: self._leaf_log_prob(piece[0], alpha[piece[0]], *piece[1:]), pieces)):
            out[s, cand] = total
            self.pairs[0] += work
        return out

    def _leaf_log_prob(self, s: int, alpha: Tensor, leaves: Tensor, inverse: Tensor, part: Tensor):
        """(candidates [m'] of seed s at the leaves `part`, their mean true-class log-probability [m'], pairs
        scored): mean_log_prob's piece."""
        n, c = self.base.shape[1:]
        valid_all = self.labels[s] >= 0
        count = valid_all.sum().clamp_min(1).to(self.base.dtype)
        weight = self.weight[s].reshape(c, self.keys)
        div = None if self.div is None else self.div[s].reshape(c, self.keys)
        cands = [(inverse == leaf).nonzero().squeeze(1) for leaf in part.tolist()]
        total = torch.zeros(inverse.shape[0], dtype=self.base.dtype, device=self.base.device)
        work = 0.0
        for r0 in range(0, n, self.rows()):
            rows = slice(r0, min(n, r0 + self.rows()))
            aff = self.affinities(s, rows)
            y, valid = self.labels[s, rows].clamp_min(0), valid_all[rows]
            group = max(1, SECONDARY_LEAF_BYTES // max(1, aff.shape[0] * c * self.base.element_size()))
            for g0 in range(0, part.shape[0], group):
                chosen = part[g0:g0 + group]
                caches = leaf_cache_terms(aff, weight, div, leaves[chosen, 1], leaves[chosen, 0], self.formula)
                for cand, cache in zip(cands[g0:g0 + group], caches):                       # [n, C] each
                    alphas, same = torch.unique(alpha[cand], return_inverse=True)   # repeated candidates once
                    logits = self.base[s, rows].unsqueeze(0) + alphas[:, None, None] * cache
                    logp = torch.log_softmax(logits, -1).gather(-1, y.expand(alphas.shape[0], -1).unsqueeze(-1))
                    total[cand] += (logp.squeeze(-1) * valid).sum(-1)[same]
                    work += float(valid.sum()) * c * alphas.shape[0]
        picked = torch.cat(cands)
        return picked, total[picked] / count, work


def leaf_cache_terms(aff: Tensor, weight: Tensor, div: Tensor | None, beta: Tensor, gamma: Tensor,
                     formula: str) -> Tensor:
    """F [L, n, C] of leaves beta, gamma [L] for affinities aff [n, C, K], key weights / divergences [C, K]:
    exact_terms' values bit for bit (the same operations, in order, on the same row slices of SECONDARY_ROWS
    affinities), computed slice by slice for every leaf while the slice is in cache, in one reused buffer
    (tip: 1 − a computed once per slice for all leaves, while the slice is in cache: keeping 1 − a of every
    affinity between calls cost a pass through memory and as much memory as the affinities; key scales of
    exactly 1 everywhere are not multiplied)."""
    n, c, k = aff.shape
    out = torch.empty(beta.shape[0], n, c, dtype=aff.dtype, device=aff.device)
    step = max(1, slice_elements(aff, SECONDARY_ROWS) // max(1, c * k))
    buffer = torch.empty(min(step, n), c, k, dtype=aff.dtype, device=aff.device)
    scales = [key_scales(weight, div, gamma[j:j + 1], 2, formula) for j in range(beta.shape[0])]
    scales = [None if bool((w == 1).all()) else w.reshape(c, k) for w in scales]
    values = beta.tolist()
    for i in range(0, n, step):
        a = aff[i:i + step]
        buf = buffer[:a.shape[0]]
        x = 1 - a if formula == "tip" else None
        for j, b in enumerate(values):
            if formula == "tip":
                torch.mul(x, -b, out=buf)                                  # −β (1 − a)
            else:
                torch.mul(a, b, out=buf).sub_(b)                            # β a − β
            buf.exp_()
            if scales[j] is not None:
                buf.mul_(scales[j])
            torch.sum(buf, -1, out=out[j, i:i + a.shape[0]])
    return out


def dense_work(shape: tuple, beta: Tensor, gamma: Tensor) -> float:
    """Elements the dense scoring of candidates beta, gamma [m] handles for affinities of shape [n, C, K]: the key
    factors [n, C, K] of each distinct β, the products summed into F [n, C] of each distinct (β, γ), the logits
    [n, C] of each candidate."""
    n, c, k = shape
    betas = torch.unique(beta).numel()
    leaves = torch.unique(torch.stack([beta, gamma], -1), dim=0).shape[0]
    return float(n * c) * (k * (betas + leaves) + beta.shape[0])


def _dense_pays(shape: tuple, beta: Tensor, gamma: Tensor) -> bool:
    """Whether dense_hits is the cheaper way for candidates beta, gamma [m] on affinities [n, C, K] (see
    DENSE_WORK, DENSE_WORK_SPREAD)."""
    work = dense_work(shape, beta, gamma)
    return work <= DENSE_WORK or (work <= DENSE_WORK_SPREAD
                                  and beta.shape[0] <= DENSE_SPREAD * torch.unique(beta).numel())


def dense_hits(data: "_SeedData", beta: Tensor, alpha: Tensor, gamma: Tensor) -> Tensor:
    """Right queries [m] of candidates beta, alpha, gamma [m] (working dtype), every (query, class) pair scored:
    per distinct β its key factors [n, C, K] once, per γ of that β the cache term F [n, C] with exact_terms'
    operations, then the logits base + α·F of every candidate at that (β, γ) (broadcast when each (β, γ) has as
    many α) and top-1 by first_max_is (torch.argmax's first maximum: the tie rule the pruned scoring reproduces).
    Rows, γ and candidates go in slices of DENSE_ELEMENTS."""
    aff, base, y = data.aff, data.base, data.y
    n, c, k = aff.shape
    m = beta.shape[0]
    leaves, inverse = torch.unique(torch.stack([beta, gamma], -1), dim=0, return_inverse=True)   # β-major
    order = torch.argsort(inverse, stable=True)
    start = [0] + torch.bincount(inverse, minlength=leaves.shape[0]).cumsum(0).tolist()
    _, per_beta = torch.unique_consecutive(leaves[:, 0], return_counts=True)
    beta_start = [0] + per_beta.cumsum(0).tolist()
    out = torch.zeros(m, dtype=torch.int64, device=aff.device)
    elements = slice_elements(aff, DENSE_ELEMENTS)
    row_step = max(1, elements // (c * k))
    kept_scales = {}                    # key scales [G, 1, C, K] per γ slice, computed once for all row slices
    keep_scales = leaves.shape[0] * c * k <= DENSE_SCALES
    for r0 in range(0, n, row_step):
        a, b_rows, y_rows = aff[r0:r0 + row_step], base[r0:r0 + row_step], y[r0:r0 + row_step]
        base_y = b_rows.gather(1, y_rows.unsqueeze(1)).squeeze(1)                                 # [n]
        rows = a.shape[0]
        gamma_step = max(1, elements // (rows * c * k))
        cand_step = max(1, elements // (rows * c))
        for l0, l1 in zip(beta_start[:-1], beta_start[1:]):
            factors = key_factors(a, leaves[l0:l0 + 1, 0], data.formula)                        # [1, n, C, K]
            for g0 in range(l0, l1, gamma_step):
                g1 = min(l1, g0 + gamma_step)
                scales = kept_scales.get((g0, g1))
                if scales is None:
                    scales = key_scales(data.weight, data.div, leaves[g0:g1, 1], a.dim(), data.formula)
                    if keep_scales:
                        kept_scales[(g0, g1)] = scales
                cache = (factors * scales).sum(-1)                                               # [G, n, C]
                cache_y = cache.gather(-1, y_rows.view(1, -1, 1).expand(cache.shape[0], -1, 1)).squeeze(-1)
                cands = order[start[g0]:start[g1]]
                per_leaf = start[g0 + 1] - start[g0]
                uniform = cands.numel() == per_leaf * (g1 - g0)      # as many α at each (β, γ): broadcast them
                step = max(1, cand_step // per_leaf) * per_leaf if uniform else cand_step
                for i in range(0, cands.numel(), step):
                    cand = cands[i:i + step]
                    if uniform:
                        leaves_here = slice(i // per_leaf, (i + cand.numel()) // per_leaf)
                        f, f_y = cache[leaves_here].unsqueeze(1), cache_y[leaves_here].unsqueeze(1)
                        shape = (-1, per_leaf)
                    else:
                        leaf = inverse[cand] - g0
                        f, f_y, shape = cache[leaf], cache_y[leaf], (-1,)
                    a_cand = alpha[cand].view(shape + (1,))
                    logits = (f * a_cand.unsqueeze(-1)).view(-1, rows, c).add_(b_rows)           # base + α·F
                    at_y = (f_y * a_cand).view(-1, rows).add_(base_y)
                    out[cand] += first_max_is(logits, at_y, y_rows).sum(-1)
    return out


def first_max_is(logits: Tensor, at_y: Tensor, y: Tensor) -> Tensor:
    """[m, n] whether torch.argmax(logits [m, n, C], −1) == y [n], for logits without NaN; at_y [m, n] = the
    logits at y, computed by the caller with the same operations. Through amax (several times faster than
    argmax): y is first iff it beats every other class, or ties their maximum with no class before y reaching it
    (torch.argmax's first maximum). Overwrites the logits at y."""
    c = logits.shape[-1]
    logits[:, torch.arange(y.shape[0], device=y.device), y] = float("-inf")
    other = logits.amax(-1)
    first = at_y > other
    tied = (at_y == other).nonzero(as_tuple=True)
    if tied[0].numel():
        before = torch.arange(c, device=y.device) < y[tied[1]].unsqueeze(1)
        first[tied] = ~((logits[tied] == at_y[tied].unsqueeze(1)) & before).any(1)
    return first


class _lazy:
    """An attribute computed on an instance's first use and kept in its __dict__ (functools.cached_property
    without its lock: on Python 3.11 that lock is shared by every instance, so the pieces' first uses in
    bridge.threads workers would run one at a time; each _SeedData belongs to one piece)."""

    def __init__(self, compute):
        self.compute, self.name, self.__doc__ = compute, compute.__name__, compute.__doc__

    def __get__(self, owner, cls=None):
        if owner is None:
            return self
        value = owner.__dict__[self.name] = self.compute(owner)
        return value


class _SeedData:
    """One seed's (chunk of) real validation queries: affinities aff [n, C, K] and logits base [n, C] in the
    working dtype, labels y [n], key weight / divergence [C, K]; the per-pair summaries the bounds use
    (float64: largest and smallest a − 1, and the weighted sums of a − 1 per γ) and the root pairs per box."""

    def __init__(self, aff, base, y, weight, div, formula):
        self.aff, self.base, self.y, self.weight, self.div, self.formula = aff, base, y, weight, div, formula
        self.dtype = base.dtype
        self.eps = 64.0 * torch.finfo(self.dtype).eps
        self.w64 = weight.to(torch.float64)
        self.shift, self.d64 = divergence_shift(weight, div)
        self._sums: dict = {}
        self._roots: dict = {}
        self._screen = None
        self._wide = None

    # the pruned path's float64 summaries, made on first use (the dense and screened paths never read them)
    @_lazy
    def xmax(self) -> Tensor:
        """[n, C] largest a − 1 of each (query, class) (float64)."""
        return self.aff.amax(-1).to(torch.float64) - 1.0

    @_lazy
    def xmin(self) -> Tensor:
        """[n, C] smallest a − 1 of each (query, class) (float64)."""
        return self.aff.amin(-1).to(torch.float64) - 1.0

    @_lazy
    def b64(self) -> Tensor:
        """[n, C] zero-shot logits (float64)."""
        return self.base.to(torch.float64)

    @_lazy
    def by64(self) -> Tensor:
        """[n] zero-shot logit of the true class (float64)."""
        return self.b64.gather(1, self.y.unsqueeze(1)).squeeze(1)

    @_lazy
    def monotone(self) -> bool:
        """Whether w ≥ 0 and every a ≤ 1 (with the shifted d ≥ 0: every term grows with γ and falls with β)."""
        return bool((self.weight >= 0).all()) and float(self.xmax.max()) <= 0.0

    def screen(self) -> cache_screen.Screen:
        """The bridge.cache_screen preparation of these queries (made once)."""
        if self._screen is None:
            self._screen = cache_screen.Screen(self.aff, self.base, self.y, self.weight, self.div, *self._terms())
        return self._screen

    def suspects(self) -> cache_suspects.Suspects:
        """These queries' suspects alone (bridge.cache_suspects; made anew: they keep none of the affinities)."""
        return cache_suspects.Suspects(self.aff, self.base, self.y, self.weight, self.div, *self._terms())

    def wide_suspects(self) -> cache_suspects.Suspects:
        """These queries' WIDE_SUSPECTS_PER_PROXY suspects (made once)."""
        if self._wide is None:
            self._wide = cache_suspects.Suspects(self.aff, self.base, self.y, self.weight, self.div, *self._terms(),
                                                 per_proxy=cache_suspects.WIDE_SUSPECTS_PER_PROXY)
        return self._wide

    def _terms(self) -> tuple:
        """(key factors, key scales) as the screens take them: the exhaustive scoring's key_factors, key_scales."""
        formula = self.formula
        return lambda a, b: key_factors(a, b, formula), lambda w, d, g: key_scales(w, d, g, 2, formula)

    def key_weights(self, gamma: float) -> Tensor:
        """[C, K] w·exp(γ d) in float64."""
        return self.w64 if self.d64 is None else self.w64 * torch.exp(self.d64 * gamma)

    def sums(self, gamma: float) -> tuple[Tensor, Tensor, Tensor]:
        """Σ_k W_k [C] and an upper and a lower bound [n, C] of Σ_k W_k (a_k − 1), with W = w·exp(γ d) (monotone
        case; the sum is taken in float32, widened by a bound of its rounding error and clamped to
        [W·xmin, W·xmax]; float64 results)."""
        key = 0.0 if self.d64 is None else float(gamma)
        if key not in self._sums:
            w = self.key_weights(key)
            w32, k = w.to(torch.float32), w.shape[-1]
            prod = self.aff.to(torch.float32) * w32
            dot = prod.sum(-1).to(torch.float64)
            err = prod.abs().sum(-1).to(torch.float64) * (2.0 * (k + 2) * 2.0 ** -24)
            err = err + (w - w32.to(torch.float64)).abs().sum(-1)                  # weights rounded to float32
            total = w.sum(-1)
            s = dot - total
            self._sums[key] = (total, torch.minimum(s + err, total * self.xmax), torch.maximum(s - err, total * self.xmin))
        return self._sums[key]

    def y_bounds(self, q: Tensor, box) -> tuple[Tensor, Tensor]:
        """Linear-in-β bounds of F_{q, y_q} over box = (β0, β1, γ0, γ1), as their values at β0 and β1:
        (lower [2, nq], upper [2, nq]). Monotone case: F_y is convex in β, so the secant through its exact values
        at γ1 bounds it above and its tangent at the middle of [β0, β1] (at γ0) below; else constants."""
        b0, b1, g0, g1 = box
        c = self.y[q]
        x = self.aff[q, c].to(torch.float64) - 1.0                              # [nq, K]
        if self.monotone and b0 >= 0:
            w1, w0 = self.key_weights(g1)[c], self.key_weights(g0)[c]
            upper = torch.stack([(w1 * torch.exp(b0 * x)).sum(-1), (w1 * torch.exp(b1 * x)).sum(-1)])
            t = 0.5 * (b0 + b1)
            terms = w0 * torch.exp(t * x)
            value, slope = terms.sum(-1), (terms * x).sum(-1)
            lower = torch.stack([value + slope * (b0 - t), value + slope * (b1 - t)])
            return lower, upper
        e_hi, e_lo = torch.maximum(x * b0, x * b1), torch.minimum(x * b0, x * b1)
        if self.d64 is not None:
            d = self.d64[c]
            e_hi = e_hi + torch.maximum(d * g0, d * g1)
            e_lo = e_lo + torch.minimum(d * g0, d * g1)
        w = self.w64[c]
        t_hi, t_lo = w * e_hi.exp(), w * e_lo.exp()
        lo, hi = torch.minimum(t_hi, t_lo).sum(-1), torch.maximum(t_hi, t_lo).sum(-1)
        return lo.expand(2, -1), hi.expand(2, -1)

    def c_bounds(self, q: Tensor | None, c: Tensor | None, box, flat: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Linear-in-β bounds of F_qc over box for pairs (q, c) ([2, P]; q = c = None: every pair, [2, n, C]),
        as y_bounds. Monotone case (w, d ≥ 0, a ≤ 1, β ≥ 0): a class's terms are convex in a, so the chord
        through its smallest and largest affinity bounds them above (at γ1; convex in β, so its secant too)
        and Jensen's inequality below (at γ0; convex in β, so its tangent at the middle too); otherwise
        constant per-term extremes from the largest and smallest affinity."""
        b0, b1, g0, g1 = box
        if q is not None and flat is None:
            flat = q * self.xmax.shape[1] + c
        pick = (lambda t: t) if q is None else (lambda t: t.reshape(-1).index_select(0, flat))
        pick_c = (lambda t: t) if q is None else (lambda t: t.index_select(0, c))
        xmax, xmin = pick(self.xmax), pick(self.xmin)
        if self.monotone and b0 >= 0:
            w1, s1, _ = self.sums(_ladder(g1, up=True))
            w0, _, s0 = self.sums(_ladder(g0, up=False))
            w1, s1, w0, s0 = pick_c(w1), pick(s1), pick_c(w0), pick(s0)
            span = xmax - xmin
            wide = span > 1e-6
            safe = torch.where(wide, span, torch.ones_like(span))
            low_w, high_w = (xmax * w1 - s1) / safe, (s1 - xmin * w1) / safe

            def chord(beta: float) -> Tensor:
                return torch.where(wide, low_w * torch.exp(beta * xmin) + high_w * torch.exp(beta * xmax),
                                   w1 * torch.exp(beta * xmax))

            t = 0.5 * (b0 + b1)
            mean = s0 / torch.where(w0 > 0, w0, torch.ones_like(w0))
            at_t = torch.where(w0 > 0, w0 * torch.exp(t * mean), torch.zeros_like(mean))
            lower = torch.stack([at_t * (1 + mean * (b0 - t)), at_t * (1 + mean * (b1 - t))])
            return lower, torch.stack([chord(b0), chord(b1)])
        corners = torch.stack([xmax * b0, xmax * b1, xmin * b0, xmin * b1])
        e_hi, e_lo = corners.amax(0).exp(), corners.amin(0).exp()
        whi, wlo = self.key_weights(g1), self.key_weights(g0)
        if self.d64 is not None:
            whi, wlo = torch.maximum(whi, wlo), torch.minimum(whi, wlo)
        pos_hi, pos_lo = pick_c(whi.clamp_min(0).sum(-1)), pick_c(wlo.clamp_min(0).sum(-1))
        neg_hi, neg_lo = pick_c((-wlo).clamp_min(0).sum(-1)), pick_c((-whi).clamp_min(0).sum(-1))
        lo, hi = pos_lo * e_lo - neg_hi * e_hi, pos_hi * e_hi - neg_lo * e_lo
        return torch.stack([lo, lo]), torch.stack([hi, hi])

    def root_pairs(self, box) -> tuple[Tensor, Tensor]:
        """The (query, class ≠ y) pairs that can beat or tie y somewhere in box = (β0, β1, α0, α1, γ0, γ1),
        tested on ROOT_BLOCKS slices of [β0, β1] (cached per box). Monotone case with α ≥ 0: a lean pass in
        float32 with a wide slack (ROOT_SLACK, it only keeps more pairs); otherwise every pair is kept (the
        boxes of the search prune them)."""
        box = tuple(float(v) for v in box)
        if box not in self._roots:
            n, c = self.base.shape
            if self.monotone and box[0] >= 0 and box[2] >= 0:
                relevant = torch.cat([self._root_rows(torch.arange(r0, min(n, r0 + ROOT_ROWS // c + 1)), box)
                                      for r0 in range(0, n, ROOT_ROWS // c + 1)])
            else:
                relevant = torch.ones(n, c, dtype=torch.bool)
            relevant[torch.arange(n), self.y] = False
            self._roots[box] = relevant.nonzero(as_tuple=True)
        return self._roots[box]

    def _root_rows(self, q: Tensor, box) -> Tensor:
        """[r, C] relevance of the rows q (see root_pairs), monotone case, α ≥ 0."""
        b0, b1, a0, a1, g0, g1 = box
        a0, a1 = folded_alphas(a0, a1, g0, g1, self.shift)
        f32 = torch.float32
        xmax, xmin = self.xmax[q].to(f32), self.xmin[q].to(f32)
        w1, s1, _ = self.sums(_ladder(g1, up=True))
        w0, _, s0 = self.sums(_ladder(g0, up=False))
        s1, s0 = s1[q].to(f32), s0[q].to(f32)
        w1, w0 = w1.to(f32), w0.to(f32)
        span = xmax - xmin
        wide = span > 1e-2
        safe = torch.where(wide, span, torch.ones_like(span))
        low_w = torch.where(wide, (xmax * w1 - s1) / safe, torch.zeros_like(span))
        high_w = torch.where(wide, (s1 - xmin * w1) / safe, w1.expand_as(span))
        base = self.b64[q].to(f32)
        by = base.gather(1, self.y[q].unsqueeze(1))
        margin = base - by
        wy = w1[self.y[q]].unsqueeze(1)
        scale = base.abs() + by.abs() + a1 * (w1 + wy) * (3 + 2 * (b1 - b0))
        threshold = -ROOT_SLACK * scale - margin                        # relevant iff α·(F_c − F_y) ≥ this somewhere
        relevant = threshold <= 0 if a0 <= 0 <= a1 else torch.zeros_like(margin, dtype=torch.bool)
        edges = _root_edges(b0, b1)
        ex = {}
        for beta in sorted({e for edge in edges for e in edge}):
            ex[beta] = low_w * torch.exp(beta * xmin) + high_w * torch.exp(beta * xmax)       # chord at β
        for lo, hi in edges:
            y_lo, _ = self.y_bounds(q, (lo, hi, g0, g1))                              # [2, r]
            up = torch.maximum(ex[lo] - y_lo[0].to(f32).unsqueeze(1), ex[hi] - y_lo[1].to(f32).unsqueeze(1))
            relevant |= torch.maximum(a0 * up, a1 * up) >= threshold
        return relevant


def folded_alphas(a0: float, a1: float, g0: float, g1: float, shift: float) -> tuple[float, float]:
    """The range of α·exp(γ·shift) over [a0, a1] × [g0, g1] (extremes at the corners: a product of α and a
    positive factor monotone in γ)."""
    corners = [a * math.exp(g * shift) for a in (a0, a1) for g in (g0, g1)]
    return min(corners), max(corners)


def _ladder(gamma: float, up: bool) -> float:
    """γ rounded up (or down) to a ladder of 32 steps per octave: the weights w·exp(γ d) grow with γ (d ≥ 0), so
    the sums at the rounded γ still bound them, and only a few sums are ever computed."""
    if gamma == 0:
        return 0.0
    step = 2.0 ** (math.floor(math.log2(abs(gamma))) - 5)
    return (math.ceil(gamma / step) if up else math.floor(gamma / step)) * step


def _root_edges(b0: float, b1: float) -> list[tuple[float, float]]:
    """ROOT_BLOCKS slices of [b0, b1], finer near the small β where the cache terms change fastest."""
    if b1 <= b0:
        return [(b0, b1)]
    u = torch.linspace(0, 1, ROOT_BLOCKS + 1, dtype=torch.float64) ** 2
    edges = (b0 + (b1 - b0) * u).tolist()
    edges[-1] = b1
    return list(zip(edges[:-1], edges[1:]))


def _differences(base_c, base_y, c_lo, c_hi, y_lo, y_hi, a0: float, a1: float, eps: float):
    """Upper and lower bounds of l_c − l_y = (base_c − base_y) + α (F_c − F_y) over the box, and the slack
    covering the float scoring's rounding. c_lo, c_hi, y_lo, y_hi: [2, ...] linear-in-β bounds of F_c and
    F_y given by their values at β0 and β1, so the extremes are at the corners (α ∈ {a0, a1}, β ∈ {β0, β1}).
    Also returns the [2, ...] bounds of F_c − F_y at β0 and β1 (upper, lower) it computed on the way."""
    up, low = c_hi - y_lo, c_lo - y_hi                                          # [2, ...] bounds of F_c − F_y
    corner_max = [a * (up if a >= 0 else low) for a in (a0, a1)]
    corner_min = [a * (low if a >= 0 else up) for a in (a0, a1)]
    margin = base_c - base_y
    d_max = margin + torch.maximum(corner_max[0].amax(0), corner_max[1].amax(0))
    d_min = margin + torch.minimum(corner_min[0].amin(0), corner_min[1].amin(0))
    scale = base_c.abs() + base_y.abs() + max(abs(a0), abs(a1)) * (
        torch.maximum(c_hi.abs(), c_lo.abs()).amax(0) + torch.maximum(y_hi.abs(), y_lo.abs()).amax(0))
    return d_max, d_min, eps * scale + 1e-300, up, low


class _Problem:
    """One call's candidates on one _SeedData: boxes over ranges of leaves, pruning, and exact scoring."""

    def __init__(self, data: _SeedData, beta, alpha, gamma):
        f64 = torch.float64
        self.data = data
        key = torch.stack([gamma.to(f64), beta.to(f64)], -1)
        leaves, inverse = torch.unique(key, dim=0, return_inverse=True)     # sorted γ-major
        self.leaf_gamma, self.leaf_beta = leaves[:, 0], leaves[:, 1]
        self.leaf_beta_w, self.leaf_gamma_w = self._values(beta, inverse, leaves.shape[0]), \
            self._values(gamma, inverse, leaves.shape[0])
        order = torch.argsort(inverse, stable=True)
        self.order, self.cand_leaf, self.cand_alpha = order, inverse[order], alpha[order]
        counts = torch.bincount(inverse, minlength=leaves.shape[0])
        self.leaf_start = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
        a64 = (alpha.to(f64) * torch.exp(gamma.to(f64) * data.shift))[order]       # folded: α·exp(γ·shift)
        self.alpha64 = a64
        self.leaf_amin = torch.full((leaves.shape[0],), float("inf"), dtype=f64).scatter_reduce(
            0, self.cand_leaf, a64, "amin")
        self.leaf_amax = torch.full((leaves.shape[0],), float("-inf"), dtype=f64).scatter_reduce(
            0, self.cand_leaf, a64, "amax")
        self.alpha_range = (float(alpha.min()), float(alpha.max())) if alpha.numel() else (0.0, 0.0)   # unfolded
        self.m = beta.shape[0]
        self.bonus = torch.zeros(self.m + 1, dtype=torch.int64)                # difference array, sorted order
        self.hits_sorted = torch.zeros(self.m, dtype=torch.int64)
        self.work = 0.0

    @staticmethod
    def _values(x: Tensor, inverse: Tensor, count: int) -> Tensor:
        """The working-dtype value of each leaf (the candidates' own values, not their float64 copies)."""
        return torch.zeros(count, dtype=x.dtype).scatter(0, inverse, x)

    def box_of_all(self) -> tuple:
        """(β0, β1, α0, α1, γ0, γ1) holding every candidate (α as given: root_pairs folds it itself)."""
        return (float(self.leaf_beta.min()), float(self.leaf_beta.max()), *self.alpha_range,
                float(self.leaf_gamma.min()), float(self.leaf_gamma.max()))

    def solve(self, pairs: tuple[Tensor, Tensor]) -> tuple[Tensor, float]:
        n = self.data.base.shape[0]
        stack = [(0, self.leaf_beta.shape[0], torch.arange(n), pairs[0], pairs[1])]
        while stack:
            lo, hi, queries, pq, pc = stack.pop()
            state = self._prune(lo, hi, queries, pq, pc)
            queries, pq, pc = state[:3]
            if queries.numel() == 0:
                continue
            leaves = hi - lo
            if leaves == 1 or leaves * (pq.numel() + queries.numel()) * self.data.aff.shape[-1] <= LEAF_WORK:
                self._finish(lo, hi, *state)
                continue
            mid = (lo + hi) // 2
            stack.append((mid, hi, queries, pq, pc))
            stack.append((lo, mid, queries, pq, pc))
        hits = self.hits_sorted + self.bonus[:-1].cumsum(0)
        out = torch.empty_like(hits)
        out[self.order] = hits
        return out, self.work

    def _prune(self, lo, hi, queries, pq, pc):
        """Drop pairs that cannot change a decision in leaves lo..hi−1; count the queries right for all of
        them; drop the queries wrong for all. Returns the remaining queries and pairs and their bounds."""
        data = self.data
        b, g = self.leaf_beta[lo:hi], self.leaf_gamma[lo:hi]
        box = (float(b.min()), float(b.max()), float(g.min()), float(g.max()))
        a0, a1 = float(self.leaf_amin[lo:hi].min()), float(self.leaf_amax[lo:hi].max())
        n = data.base.shape[0]
        local = torch.empty(n, dtype=torch.int64)
        local[queries] = torch.arange(queries.numel())
        li = local[pq]
        q_lo, q_hi = data.y_bounds(queries, box)                                # [2, nq] each
        y_lo, y_hi = q_lo.index_select(1, li), q_hi.index_select(1, li)         # [2, P]: each pair's query
        flat = pq * data.base.shape[1] + pc
        c_lo, c_hi = data.c_bounds(pq, pc, box, flat)
        base_c, base_y = data.b64.reshape(-1).index_select(0, flat), data.by64.index_select(0, pq)
        d_max, d_min, slack, up, low = _differences(base_c, base_y, c_lo, c_hi, y_lo, y_hi, a0, a1, data.eps)
        relevant = d_max >= -slack
        beaten = torch.zeros(queries.numel(), dtype=torch.bool)
        beaten[li[d_min > slack]] = True                                        # wrong everywhere in the box
        has_pair = torch.zeros(queries.numel(), dtype=torch.bool)
        has_pair[li[relevant]] = True
        count = int((~beaten & ~has_pair).sum())                                # right everywhere in the box
        if count:
            self.bonus[int(self.leaf_start[lo])] += count
            self.bonus[int(self.leaf_start[hi])] -= count
        keep_q = ~beaten & has_pair
        keep = (relevant & keep_q[li]).nonzero().squeeze(1)                    # one nonzero for every selection
        kq = queries[keep_q]
        up, low = up.amax(0).index_select(0, keep), low.amin(0).index_select(0, keep)   # F_c − F_y over the box
        pick = lambda t: t.index_select(0, keep)  # noqa: E731
        return kq, pick(pq), pick(pc), pick(base_c - base_y), up, low, pick(slack), (a0, a1)

    def _finish(self, lo, hi, queries, pq, pc, margin, up, low, slack, alphas):
        """Decide every (query, candidate) of leaves lo..hi−1: by the α-intervals where the bounds already
        decide it (α ≥ 0), else exactly on the query's remaining pairs."""
        data = self.data
        s0, s1 = int(self.leaf_start[lo]), int(self.leaf_start[hi])
        nq = queries.numel()
        local = torch.empty(data.base.shape[0], dtype=torch.int64)
        local[queries] = torch.arange(nq)
        li = local[pq]
        alpha = self.alpha64[s0:s1]                                            # [m]
        if alphas[0] >= 0:
            right, wrong = self._zones(li, nq, margin, up, low, slack, alpha)
        else:
            right = wrong = torch.zeros(nq, alpha.shape[0], dtype=torch.bool)
        self.hits_sorted[s0:s1] += right.sum(0)
        open_ = ~right & ~wrong                                                # [nq, m]
        todo = open_.any(1)
        if not bool(todo.any()):
            return
        sub_q = todo.nonzero().squeeze(1)                                      # local ids
        keep = todo[li]
        sq, spq, spc = queries[sub_q], pq[keep], pc[keep]
        remap = torch.empty(nq, dtype=torch.int64)
        remap[sub_q] = torch.arange(sub_q.numel())
        sli = remap[li[keep]]
        yq = data.y[sq]
        pc_all, pq_all = torch.cat([yq, spc]), torch.cat([sq, spq])
        div = None if data.div is None else data.div[pc_all]
        f = exact_terms(data.aff[pq_all, pc_all], data.weight[pc_all], div, self.leaf_beta_w[lo:hi],
                        self.leaf_gamma_w[lo:hi], data.formula)                # [L, P]
        base = data.base[pq_all, pc_all]
        leaf = self.cand_leaf[s0:s1] - lo
        logits = base.unsqueeze(0) + self.cand_alpha[s0:s1].unsqueeze(1) * f[leaf]     # [m, P]
        k = sq.numel()
        ly, lc = logits[:, :k], logits[:, k:]
        ly_pairs = ly[:, sli]
        before = (spc < data.y[spq]).unsqueeze(0)
        loses = torch.where(before, lc >= ly_pairs, lc > ly_pairs)             # torch.argmax's first maximum
        bad = torch.zeros(alpha.shape[0], k, dtype=torch.int32).index_add_(1, sli, loses.to(torch.int32))
        ok = (bad == 0) & open_[sub_q].transpose(0, 1)
        self.hits_sorted[s0:s1] += ok.sum(-1)
        self.work += float(open_.sum()) * (1 + spq.numel() / max(k, 1))

    @staticmethod
    def _zones(li, nq, margin, up, low, slack, alpha):
        """[nq, m] right / wrong for sure at each α ≥ 0, from l_c − l_y ∈ [margin + α·low, margin + α·up] ± slack
        over each query's pairs (li: the pair's query)."""
        f64 = torch.float64
        inf = torch.tensor(float("inf"), dtype=f64)
        # c surely loses where margin + α·up < −slack
        t = (-slack - margin) / torch.where(up != 0, up, torch.ones_like(up))
        r_hi = torch.full((nq,), float("inf"), dtype=f64).scatter_reduce(0, li, torch.where(up > 0, t, inf), "amin")
        r_lo = torch.full((nq,), float("-inf"), dtype=f64).scatter_reduce(0, li, torch.where(up < 0, t, -inf), "amax")
        never = torch.zeros(nq, dtype=torch.bool)
        never[li[(up == 0) & (margin >= -slack)]] = True
        # c surely wins where margin + α·low > slack
        u = (slack - margin) / torch.where(low != 0, low, torch.ones_like(low))
        w_hi = torch.full((nq,), float("inf"), dtype=f64).scatter_reduce(0, li, torch.where(low > 0, u, inf), "amin")
        w_lo = torch.full((nq,), float("-inf"), dtype=f64).scatter_reduce(0, li, torch.where(low < 0, u, -inf), "amax")
        always = torch.zeros(nq, dtype=torch.bool)
        always[li[(low == 0) & (margin > slack)]] = True
        pad = lambda v: 1e-9 * (1 + v.abs().nan_to_num(0.0, 0.0, 0.0))  # noqa: E731  keep away from the edges
        a = alpha.unsqueeze(0)
        right = (a > (r_lo + pad(r_lo)).unsqueeze(1)) & (a < (r_hi - pad(r_hi)).unsqueeze(1)) & ~never.unsqueeze(1)
        wrong = (a > (w_hi + pad(w_hi)).unsqueeze(1)) | (a < (w_lo - pad(w_lo)).unsqueeze(1)) | always.unsqueeze(1)
        both = right & wrong
        return right & ~both, wrong & ~both


class CacheFusionScore:
    """A bridge.search.LazyScore over CacheFusion: primary = validation accuracy (percent, as
    bridge.ops.accuracy), secondary = mean true-class log-probability (as bridge.fusion.validation_scores).

    columns: the candidate coordinates holding (β, α, γ); γ None = 0 (no γ term)."""

    def __init__(self, problem: CacheFusion, beta: int, alpha: int, gamma: int | None = None):
        self.problem, self.columns = problem, (beta, alpha, gamma)
        self.count = (problem.labels >= 0).sum(-1).clamp_min(1).to(problem.base.dtype)      # [S]

    def _split(self, candidates: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, a, g = self.columns
        beta, alpha = candidates[..., b], candidates[..., a]
        return beta, alpha, (torch.zeros_like(beta) if g is None else candidates[..., g])

    def primary(self, candidates: Tensor) -> Tensor:
        hits = self.problem.hits(*self._split(candidates))
        return 100.0 * hits.to(self.problem.base.dtype) / self.count.unsqueeze(1)

    def bounded_primary(self, candidates: Tensor, keep: int, elites: Tensor) -> Tensor:
        """primary, exact wherever a candidate can be among the best `keep` of `elites` [S, E] (float64 values
        this score returned before) and these candidates; elsewhere a value below the keep-th best of them
        (CacheFusion.top_hits; bridge.search.LazyScore)."""
        count = self.count.to("cpu", torch.float64).unsqueeze(1)
        if float(count.max()) > MAX_EXACT_PERCENT_QUERIES:       # percent values of two counts could round alike
            return self.primary(candidates)
        percent = elites.to("cpu", torch.float64).nan_to_num(-1.0, -1.0, -1.0).clamp_min(-1.0)   # -inf: no candidate
        known = torch.round(percent * count / 100.0).to(torch.int64)                             # the elites' hits
        hits = self.problem.top_hits(*self._split(candidates), keep=keep, known=known)
        return 100.0 * hits.to(self.problem.base.dtype) / self.count.unsqueeze(1)

    def secondary(self, candidates: Tensor) -> Tensor:
        return self.problem.mean_log_prob(*self._split(candidates))

    @property
    def scored_share(self) -> float | None:
        """(query, class) pairs scored exactly, for the hit counts and the secondary scores, per pair of the
        candidates whose hits were counted (None before any)."""
        scored, total = self.problem.pairs
        return scored / total if total else None
