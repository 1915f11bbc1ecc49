"""The suspects of APE's screened hit counts (bridge.cache_screen): per query a few classes most likely to beat the
true class y, their exact cache terms at a leaf (distinct (β, γ)), and from them the queries that no suspect surely
beats at each α, an upper bound of a candidate's hits (`open_counts`) that bridge.cache_search.CacheFusion.top_hits
uses to count exactly only the candidates that can be among the best.

Suspects hold only [n, T] and [n, T, K] gathers of a piece's affinities, not the affinities themselves, so they are
kept between calls also where the affinities of a search are not (ImageNet's 50,000 validation queries).
Notation as bridge.cache_screen: F_nc(β, γ) = Σ_{k of c} w_k·exp(γ d_k)·exp(β (a_nk − 1)), logits l = base + α·F.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from clipbridge.bridge.precision import full_products

# suspects per proxy (zero-shot logit, mean affinity, largest affinity, cache term at SUSPECT_BETA). With a grid's
# leaves bounded by batched products (product_maxima) more suspects cost little and spare wide bounds: the official
# grid at C = 1,000, fit s, 5: 10.5-10.8, 6: 10.1, 7: 9.5-9.5, 8: 11.1, 9: 9.9 (wide passes 2.5 s at 5, 1.0 s at 7;
# FIGURES.md "Eighth stop"; 5 was best leaf by leaf)
SUSPECTS_PER_PROXY = 7
# suspects per proxy of the second, tighter bound that top_hits takes only for the candidates the first one leaves
# among the best (the official grid at C = 1,000: 15 leave 8 candidates a seed to count exactly, 5 leave 362)
WIDE_SUSPECTS_PER_PROXY = 15
SUSPECT_BETA = 3.5
# 1/|A| that open_queries takes for a suspect whose slackened base margin A over y is exactly 0 (B·this keeps B's sign
# and exceeds every finite 1/α of a positive B of a realistic size)
ZERO_MARGIN_INVERSE = 1e300
# relative widening of a suspect's margin over y before open_queries takes it as a sure win (the exhaustive
# logits' rounding is a few 1e-8 of |base| + α·|F|)
SURE_SLACK = 1e-6
# ... plus this many machine epsilons per key for the cache terms F: open_counts may sum a leaf's K key terms in
# another order than the exhaustive scoring (a batched product, `product_maxima`), and two sums of K positive
# terms in any order are within K·eps·F of each other
TERM_SLACK_PER_KEY = 2
# the leaves (distinct (β, γ)) must fill at least this share of their β × γ product for open_counts to bound them
# all by `product_maxima` (the official grids fill all of it; the batched search's spread-out points almost none)
PRODUCT_FILL = 0.5
# bytes of the [leaves, n] maxima (float64, two) that open_counts' product path holds at a time, and queries per
# batched product (rows · (T + 1) products of [β, K] × [K, γ]; 16 measured fastest of 16, 32 and 64)
PRODUCT_MAXIMA_BYTES = 32 << 20
PRODUCT_ROWS = 16
# elements of the [leaves, α per leaf, queries] comparisons that open_counts' product path makes at a time
COMPARE_ELEMENTS = 1 << 20
# bytes of the suspects' gathered key scales kept, one entry per γ (2.3 MB per γ at 2,000 queries, 17 suspects at 5
# per proxy, K = 16: the official grids' 20 γ fit); open_counts drops them when it is done with a piece
WITNESS_SCALE_BYTES = 64 << 20
# elements of the [rows, C, K] affinities taken at a time by suspect_classes (stay in the CPU's cache)
SUSPECT_ELEMENTS = 1 << 20

Factors = Callable[[Tensor, Tensor], Tensor]
Scales = Callable[[Tensor, "Tensor | None", Tensor], Tensor]


def take_rows(table: Tensor, index: Tensor) -> Tensor:
    """table[index] [..., K] of a [R, K] table and indices [...]: index_select, several times faster on the CPU
    than the same gather by advanced indexing (0.10 against 0.47 ms for 34,000 rows of 16 floats)."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[-1])


def take_pairs(aff: Tensor, q: Tensor, c: Tensor) -> Tensor:
    """aff[q, c] [..., K] of affinities aff [n, C, K] for query and class indices q, c broadcastable to [...], by
    take_rows on aff as [n·C, K] (a view: the searches' affinities are contiguous)."""
    q, c = torch.broadcast_tensors(q, c)
    return take_rows(aff.reshape(-1, aff.shape[-1]), q * aff.shape[1] + c)


def suspect_classes(aff: Tensor, amax: Tensor, base: Tensor, y: Tensor, per_proxy: int) -> Tensor:
    """[n, T] classes ≠ y most likely to beat y somewhere: the top per_proxy by zero-shot logit, mean affinity,
    largest affinity (amax [n, C]) and Σ_k exp(SUSPECT_BETA·(a − 1)), each row's distinct classes in ascending
    order, T = the most distinct of any row (≤ 4·per_proxy; the proxies agree often: at 5 per proxy 14.5 distinct
    of 20 on average, 17 at most, on the synthetic C = 1,000 cache), shorter rows padded with their first class (a
    repeat adds no constraint). aff [n, C, K], taken in row slices."""
    n, c, k = aff.shape
    per_proxy = min(per_proxy, c - 1)
    mean, soft = torch.empty(n, c, dtype=aff.dtype), torch.empty(n, c, dtype=aff.dtype)
    step = max(1, SUSPECT_ELEMENTS // (c * k))
    for r0 in range(0, n, step):
        part = aff[r0:r0 + step]
        torch.mean(part, -1, out=mean[r0:r0 + step])
        torch.sum(torch.exp(part * SUSPECT_BETA - SUSPECT_BETA), -1, out=soft[r0:r0 + step])
    rows = torch.arange(n)
    picks = []
    for proxy in (base, mean, amax, soft):
        p = proxy.clone()
        p[rows, y] = -math.inf
        picks.append(p.topk(per_proxy, 1).indices)
    return distinct_per_row(torch.cat(picks, 1))


def distinct_per_row(classes: Tensor) -> Tensor:
    """[n, T'] each row's distinct entries of classes [n, T] (ascending), T' = the most distinct of any row,
    shorter rows padded with their first entry."""
    ordered = classes.sort(1).values
    repeat = torch.zeros_like(ordered, dtype=torch.bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    first = torch.argsort(repeat.to(torch.int8), dim=1, stable=True)           # distinct entries first, in order
    width = int((~repeat).sum(1).max()) if classes.shape[0] else classes.shape[1]
    packed, kept = ordered.gather(1, first)[:, :width], ~repeat.gather(1, first)[:, :width]
    return torch.where(kept, packed, packed[:, :1])


class Suspects:
    """One seed's (chunk of) real queries' suspects: aff [n, C, K] (read here, not kept), base [n, C] (working dtype),
    y [n], weight, div [C, K] (div may be None: no γ term; weight ≥ 0: the screen's monotone case, so F ≥ 0).
    factors(aff [..., K], β [1]) -> [1, ..., K] and scales(weight, div, γ [1]) -> [C, K] (or [1, C, K]) are the
    exhaustive scoring's key factors and key scales (bridge.cache_search.key_factors, key_scales); amax [n, C], the
    largest affinity per class, may be given when the caller has it; per_proxy: suspects per proxy (default
    SUSPECTS_PER_PROXY)."""

    def __init__(self, aff: Tensor, base: Tensor, y: Tensor, weight: Tensor, div: Tensor | None, factors: Factors,
                 scales: Scales, amax: Tensor | None = None, per_proxy: int | None = None):
        f64 = torch.float64
        self.y, self.weight, self.div = y, weight, div
        self.factors, self.scales = factors, scales
        self._scale_table: tuple = (None, None)                                           # (γ, [C, K]) of the last leaf
        self._witness_factors: tuple = (None, None, None)      # (β, key factors of y [n, K], of suspects [n, T, K])
        self._witness_scales: dict = {}                        # γ -> key scales of y [n, K], of suspects [n, T, K]
        n = aff.shape[0]
        self.base_y = base.gather(1, y.unsqueeze(1)).squeeze(1)                             # [n]
        self.suspects = suspect_classes(aff, aff.amax(-1) if amax is None else amax, base, y,
                                        SUSPECTS_PER_PROXY if per_proxy is None else per_proxy)   # [n, T]
        rows = torch.arange(n)
        self.aff_y = take_pairs(aff, rows, y)                                               # [n, K]
        self.aff_s = take_pairs(aff, rows.unsqueeze(1), self.suspects)                      # [n, T, K]
        self.base_s = base.gather(1, self.suspects)                                         # [n, T]
        self.before = self.suspects < y.unsqueeze(1)                   # [n, T] suspects that win a tie with y
        # open_queries' leaf-free parts, [n, T] each (A = the suspects' base margin over y less its slack): 1/|A|
        # (A = 0: a huge number, so that B·(1/|A|) keeps B's sign), and offsets that keep only the suspects with A > 0
        # (0 there, −inf elsewhere) or A ≤ 0 in a maximum; a suspect with no finite A is in neither. twin: the
        # suspects before y with y's own base (a duplicated class ties y when F does too)
        by, bs = self.base_y.to(f64).unsqueeze(1), self.base_s.to(f64)
        margin = (bs - by) - SURE_SLACK * (bs.abs() + by.abs())
        known = torch.isfinite(margin)
        self.inv_margin = torch.where(margin != 0, 1 / margin.abs(), torch.full_like(margin, ZERO_MARGIN_INVERSE))
        self.ahead = torch.where(known & (margin > 0), 0.0, -math.inf).to(f64)
        self.behind = torch.where(known & (margin <= 0), 0.0, -math.inf).to(f64)
        self.twin = self.before & (bs == by)
        self.any_twin = bool(self.twin.any())
        # relative widening of F_y and F_s (TERM_SLACK_PER_KEY): B = F_s·(1 − term_slack) − F_y·(1 + term_slack)
        self.term_slack = SURE_SLACK + TERM_SLACK_PER_KEY * aff.shape[-1] * torch.finfo(aff.dtype).eps

    def _exact(self, aff: Tensor, classes: Tensor, beta: Tensor, gamma: Tensor, scales: Tensor | None = None) -> Tensor:
        """F [...] of affinities aff [..., K] of classes [...] at one leaf (the exhaustive scoring's values): the key
        factors times the key scales, computed once per γ for every key and gathered (or given: `scales`, the
        same gather kept for this γ)."""
        if scales is None:
            scales = take_rows(self._scales(gamma), classes)
        return (self.factors(aff, beta.view(1))[0] * scales).sum(-1)

    def _scales(self, gamma: Tensor) -> Tensor:
        """[C, K] key scales at γ (kept for the last γ asked)."""
        g = float(gamma)
        if self._scale_table[0] != g:
            self._scale_table = (g, self.scales(self.weight, self.div, gamma.view(1)).reshape(self.weight.shape))
        return self._scale_table[1]

    def _witness_terms(self, beta: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
        """(F_y [n], F of the suspects [n, T]) at one leaf, the exhaustive scoring's values (_exact's operations).
        The key factors of the last β and the gathered key scales of the last γs (WITNESS_SCALE_BYTES) are kept:
        open_counts walks the leaves β-major, so a grid computes each β's exponentials once for all its γ."""
        b, g = float(beta), float(gamma)
        if self._witness_factors[0] != b:
            self._witness_factors = (b, self.factors(self.aff_y, beta.view(1))[0],
                                     self.factors(self.aff_s, beta.view(1))[0])
        scales = self._witness_scales.get(g)
        if scales is None:
            table = self._scales(gamma)
            scales = (take_rows(table, self.y), take_rows(table, self.suspects))
            per_gamma = sum(t.numel() * t.element_size() for t in scales)
            while self._witness_scales and (len(self._witness_scales) + 1) * per_gamma > WITNESS_SCALE_BYTES:
                del self._witness_scales[next(iter(self._witness_scales))]           # the oldest γ
            self._witness_scales[g] = scales
        _, factors_y, factors_s = self._witness_factors
        return (factors_y * scales[0]).sum(-1), (factors_s * scales[1]).sum(-1)          # [n], [n, T]

    def witness(self, beta: Tensor, gamma: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor, Tensor, float]:
        """(F_y [n], l_y [m, n], wrong [m, n], pairs scored) at one leaf: the exact cache term and logit of the
        true class, and the queries a suspect beats (torch.argmax's tie rule: a class before y wins a tie)."""
        n = self.y.shape[0]
        f_y, f_s = self._witness_terms(beta, gamma)
        a = alpha.view(-1, 1)
        l_y = self.base_y + a * f_y                                                       # [m, n]
        l_s = self.base_s + a.unsqueeze(-1) * f_s                                         # [m, n, T]
        wrong = torch.where(self.before, l_s >= l_y.unsqueeze(-1), l_s > l_y.unsqueeze(-1)).any(-1)     # [m, n]
        return f_y, l_y, wrong, float(n * (1 + self.suspects.shape[1]) * alpha.shape[0])

    def open_queries(self, beta: Tensor, gamma: Tensor, alpha: Tensor) -> tuple[Tensor, float]:
        """(queries [m] that no suspect surely beats at candidates (β, alpha[i], γ), pairs scored exactly) for one
        leaf: at least the queries `witness` leaves open, so still an upper bound of the hits, for two maxima per
        query (`_maxima`) and two comparisons per α (`open_at`) instead of one comparison per suspect and α."""
        f_y, f_s = self._witness_terms(beta, gamma)
        ahead, behind = self._maxima(f_y.unsqueeze(-1), f_s.unsqueeze(-1), slice(None))
        return open_at(ahead[:, 0], behind[:, 0], alpha), float(self.y.shape[0] * (1 + self.suspects.shape[1]))

    def _maxima(self, f_y: Tensor, f_s: Tensor, rows: slice, ties: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(ahead, behind) [r, L] float64 of the queries `rows` (r of them) at L leaves, from F_y [r, L] and the
        suspects' F_s [r, T, L]. A suspect's margin over y, (base_s − base_y) + α·(F_s − F_y), is widened by
        SURE_SLACK relative to |base_s| + |base_y| and term_slack relative to α·(F_s + F_y) (F ≥ 0; far above the
        rounding of the exhaustive logits and of F's summation): A + α·B > 0 then proves the suspect wins at α ≥ 0.
        With u = 1/α (α = 0: u = ∞) that is B/A > −u where A > 0 and B/|A| > u where A ≤ 0 (A = 0: B > 0 and
        α > 0), so a query is surely wrong at α iff ahead = the largest B/A of its suspects with A > 0 exceeds −u
        or behind = the largest B/|A| of the others exceeds u (a NaN proves nothing). A suspect before y with y's
        own base and F (a duplicated class) has y's logits at every α and wins the tie everywhere: ahead = +∞.
        That needs F from the exhaustive scoring's operations: f_y, f_s are (the leaf path), or `ties` [r, L] is
        given, the queries with such a twin at each leaf (the product path's F, summed in another order, is not)."""
        fy = f_y.to(torch.float64).mul_(1 + self.term_slack).unsqueeze(1)              # [r, 1, L]
        slope = f_s.to(torch.float64).mul_(1 - self.term_slack).sub_(fy)              # B [r, T, L]; A: __init__
        inv = self.inv_margin[rows].unsqueeze(-1)
        ahead = torch.addcmul(self.ahead[rows].unsqueeze(-1), slope, inv).amax(1)     # [r, L] largest B/A, A > 0
        behind = torch.addcmul(self.behind[rows].unsqueeze(-1), slope, inv).amax(1)   # [r, L] largest B/|A|, A ≤ 0
        if self.any_twin:
            if ties is None:
                ties = (self.twin[rows].unsqueeze(-1) & (f_s == f_y.unsqueeze(1))).any(1)
            ahead.masked_fill_(ties, math.inf)
        return ahead, behind

    def product_maxima(self, betas: Tensor, gammas: Tensor) -> tuple[Tensor, Tensor]:
        """(ahead, behind) [Lb, Lg, n] float64 (`_maxima`) of every leaf of betas [Lb] × gammas [Lg] (working
        dtype), with F of y and the suspects from one batched product per PRODUCT_ROWS queries: the key factors
        [rows·(T + 1), Lb, K] times the gathered key scales [rows·(T + 1), K, Lg], so each β's exponentials and
        each γ's scales are read once for all leaves of the other (a leaf's own multiply-and-sum reads both). The
        products run at float32 precision whatever the fit's (bridge.precision.full_products): F is widened by
        term_slack for float32 rounding only."""
        n, k = self.y.shape[0], self.aff_s.shape[-1]
        lb, lg = betas.shape[0], gammas.shape[0]
        tables = [self._scales(g) for g in gammas]                                      # [C, K] per γ
        table = torch.stack(tables, -1).reshape(self.weight.shape[0], k * lg)
        aff = torch.cat([self.aff_y.unsqueeze(1), self.aff_s], 1)                        # [n, T+1, K]: y first
        classes = torch.cat([self.y.unsqueeze(1), self.suspects], 1)                     # [n, T+1]
        t1 = aff.shape[1]
        ahead = torch.empty(lb * lg, n, dtype=torch.float64)
        behind = torch.empty(lb * lg, n, dtype=torch.float64)
        for r0 in range(0, n, PRODUCT_ROWS):
            rows = slice(r0, min(n, r0 + PRODUCT_ROWS))
            r = rows.stop - r0
            factors = self.factors(aff[rows], betas).permute(1, 2, 0, 3).reshape(r * t1, lb, k)
            scales = take_rows(table, classes[rows]).view(r * t1, k, lg)
            with full_products():
                f = torch.bmm(factors, scales).view(r, t1, lb * lg)                     # [r, T+1, Lb·Lg]
            ties = self._twin_ties(rows, betas, tables) if self.any_twin else None
            a, b = self._maxima(f[:, 0], f[:, 1:], rows, ties)
            ahead[:, rows], behind[:, rows] = a.T, b.T
        return ahead.view(lb, lg, n), behind.view(lb, lg, n)

    def _twin_ties(self, rows: slice, betas: Tensor, tables: list[Tensor]) -> Tensor:
        """[r, Lb·Lg] bool (product_maxima's leaf order, β-major): the queries `rows` with a twin suspect (_maxima)
        whose F equals y's at each leaf of betas [Lb] × the γ of the key scales `tables` (Lg of [C, K]), from the
        exhaustive scoring's operations (_witness_terms': a leaf's key factors times its key scales, summed over
        the keys), only for the few queries that have a twin."""
        twin = self.twin[rows]
        lb, lg = betas.shape[0], len(tables)
        ties = torch.zeros(twin.shape[0], lb, lg, dtype=torch.bool)
        local = twin.any(1).nonzero()[:, 0]
        if local.numel():
            q = local + rows.start
            factors_y, factors_s = self.factors(self.aff_y[q], betas), self.factors(self.aff_s[q], betas)
            for g, table in enumerate(tables):
                f_y = (factors_y * take_rows(table, self.y[q])).sum(-1)                  # [Lb, q]
                f_s = (factors_s * take_rows(table, self.suspects[q])).sum(-1)           # [Lb, q, T]
                ties[local, :, g] = (twin[local] & (f_s == f_y.unsqueeze(-1))).any(-1).T
        return ties.view(twin.shape[0], lb * lg)

    def forget_terms(self) -> None:
        """Drop the kept key factors and gathered key scales (open_counts, done with this piece)."""
        self._witness_factors, self._witness_scales = (None, None, None), {}


def leaf_index(beta: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
    """(leaves [L, 2] = the distinct (γ, β), γ-major; each candidate's leaf [m]) of candidates beta, gamma [m]."""
    return torch.unique(torch.stack([gamma, beta], -1), dim=0, return_inverse=True)


def leaves_of(beta: Tensor, gamma: Tensor) -> tuple[Tensor, list[Tensor]]:
    """(leaves [L, 2] as leaf_index; the candidates of each leaf, in order) of candidates beta, gamma [m]."""
    leaves, inverse = leaf_index(beta, gamma)
    return leaves, leaf_members(inverse, leaves.shape[0])


def leaf_members(inverse: Tensor, count: int) -> list[Tensor]:
    """The candidates [m_l] of each of `count` leaves, in order, from each candidate's leaf inverse [m]."""
    order = torch.argsort(inverse, stable=True)
    return list(order.split(torch.bincount(inverse, minlength=count).tolist()))


def open_at(ahead: Tensor, behind: Tensor, alpha: Tensor) -> Tensor:
    """Queries [m] not surely wrong at each of alpha [m] (working dtype) of a leaf whose queries' maxima are
    ahead, behind [n] (Suspects._maxima): wrong iff ahead > −1/α or behind > 1/α."""
    u = inverse_alpha(alpha).unsqueeze(1)                                             # [m, 1]
    return ahead.shape[0] - ((ahead > -u) | (behind > u)).sum(1)


def inverse_alpha(alpha: Tensor) -> Tensor:
    """u = 1/α [m] float64 of alpha [m] (working dtype), α = 0 of either sign giving +∞ (−0.0 weighs the cache
    term by zero too; its reciprocal −∞ would mark every query wrong)."""
    return alpha.to(torch.float64).add(0.0).reciprocal()


def open_counts(screen: Suspects, beta: Tensor, alpha: Tensor, gamma: Tensor) -> tuple[Tensor, float]:
    """(queries no suspect surely beats [m], pairs scored exactly) of candidates beta, alpha, gamma [m] (working
    dtype): an upper bound of each candidate's hits (a query a suspect beats is wrong: Suspects._maxima), at the
    cost of the suspects' exact terms alone, once per leaf. bridge.cache_search.CacheFusion.top_hits scores exactly
    only the candidates whose bound can reach the best ones. Leaves that fill PRODUCT_FILL of their β × γ product
    (a grid) are bounded together (`_product_open_counts`); others one by one."""
    m = beta.shape[0]
    leaves, inverse = leaf_index(beta, gamma)
    betas, gammas = leaves[:, 1].unique(), leaves[:, 0].unique()
    if betas.numel() * gammas.numel() * PRODUCT_FILL <= leaves.shape[0]:
        out, work = _product_open_counts(screen, betas, gammas, leaves, inverse, alpha)
    else:
        out, work = torch.zeros(m, dtype=torch.int64), 0.0
        cands = leaf_members(inverse, leaves.shape[0])
        for leaf in torch.argsort(leaves[:, 1], stable=True).tolist():          # β-major: each β's factors once
            out[cands[leaf]], w = screen.open_queries(leaves[leaf, 1], leaves[leaf, 0], alpha[cands[leaf]])
            work += w
    screen.forget_terms()
    return out, work


def _product_open_counts(screen: Suspects, betas: Tensor, gammas: Tensor, leaves: Tensor, inverse: Tensor,
                         alpha: Tensor) -> tuple[Tensor, float]:
    """open_counts of candidates at leaves [L, 2] (leaf_index: each candidate's leaf `inverse` [m]) of the product
    betas × gammas: Suspects.product_maxima in blocks of β (PRODUCT_MAXIMA_BYTES), then each block's candidates
    compared at once, a leaf's maxima against its α laid out in a row ([leaves, most α of a leaf], NaN where a
    leaf has fewer: a NaN compares false and is never read back; COMPARE_ELEMENTS at a time)."""
    m, (n, t) = inverse.shape[0], screen.suspects.shape
    lg = gammas.numel()
    leaf_b = torch.searchsorted(betas, leaves[:, 1].contiguous())[inverse]               # [m] β index
    leaf_g = torch.searchsorted(gammas, leaves[:, 0].contiguous())[inverse]              # [m] γ index
    sizes = torch.bincount(inverse, minlength=leaves.shape[0])
    order = torch.argsort(inverse, stable=True)
    rank = torch.empty(m, dtype=torch.int64)
    rank[order] = torch.arange(m) - (sizes.cumsum(0) - sizes)[inverse[order]]         # place among its leaf's
    width = int(sizes.max()) if m else 1
    u = inverse_alpha(alpha)                                                              # [m]
    out = torch.zeros(m, dtype=torch.int64)
    block = max(1, PRODUCT_MAXIMA_BYTES // (16 * max(1, n * lg)))
    for b0 in range(0, betas.numel(), block):
        ahead, behind = screen.product_maxima(betas[b0:b0 + block], gammas)             # [Lb, Lg, n]
        ahead, behind = ahead.view(-1, 1, n), behind.view(-1, 1, n)
        chosen = ((leaf_b >= b0) & (leaf_b < b0 + block)).nonzero()[:, 0]
        at = (leaf_b[chosen] - b0) * lg + leaf_g[chosen]                                 # its leaf in the block
        laid = torch.full((ahead.shape[0], width, 1), math.nan, dtype=torch.float64)
        laid[at, rank[chosen], 0] = u[chosen]
        opened = torch.empty(ahead.shape[0], width, dtype=torch.int64)
        step = max(1, COMPARE_ELEMENTS // (width * max(1, n)))
        for l0 in range(0, ahead.shape[0], step):
            part = slice(l0, l0 + step)
            wrong = (ahead[part] > -laid[part]) | (behind[part] > laid[part])          # [leaves, width, n]
            opened[part] = n - wrong.sum(-1)
        out[chosen] = opened[at, rank[chosen]]
    return out, float(betas.numel() * lg * n * (1 + t))
