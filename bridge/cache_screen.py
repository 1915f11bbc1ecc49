"""Exact hit counts of APE's cache-fusion candidates by screening every (query, class) pair with a float32 bound of
a few operations per leaf (distinct (β, γ)), scoring exactly only a few suspects per query and the pairs the bound
cannot decide. Used by bridge.cache_search for the monotone case (key weights w ≥ 0, β, α, γ ≥ 0).

Notation as bridge.cache_search: F_nc(β, γ) = Σ_{k of c} w_k·exp(γ d_k)·exp(β (a_nk − 1)), logits l = base + α·F,
d₀ = the smallest divergence of a real key, δ = d − d₀ ≥ 0, A = α·exp(γ d₀), G = exp(−γ d₀)·F.

Upper bound of G_nc (per pair, float32), with a_min, span = the class's smallest affinity and a_max − a_min:
  - chord: exp(β (a − 1)) is convex in a, so on [a_min, a_max] it lies below the chord through the ends:
        G ≤ exp(β (a_min − 1)) · (W(γ) + D(γ) · expm1(β·span) / span)
    with W(γ) = Σ_k w_k exp(γ δ_k) (per class, float64 then rounded up) and D(γ) = Σ_k w_k exp(γ δ_k) (a_k − a_min);
  - D(γ) by its moments N_j = Σ_k w_k δ_k^j (a_k − a_min) ≥ 0 (computed once per seed): the Taylor series of
    exp(γ δ) has non-negative terms, so D(γ) ≤ Σ_{j ≤ J} γ^j/j!·N_j + exp(γ δ_max)·γ^{J+1}/(J+1)!·N_{J+1}.
  All terms are non-negative, so float32 rounding moves the bound by a few ulp relative; it is widened by a
  relative RELATIVE_SLACK (and W, the moments and A are rounded up), far above that.
Decision of query n at candidate (β, α, γ), with l_y computed exactly (the exhaustive scoring's operations):
  1. suspects: the exact logits of a few classes per query (the strongest by zero-shot logit, by mean and by largest
     affinity, by the cache term at a middle β: `suspect_classes`); one that beats y (torch.argmax's first maximum:
     a class before y wins a tie) makes the query wrong, exactly;
  2. otherwise every class c ≠ y whose bound base_c + A·U_c is below l_y − σ (σ = ABSOLUTE_SLACK·(max_c |base_nc| +
     |l_y|), above the rounding of the exhaustive logits) loses to y in the exhaustive scoring;
  3. the classes the bound cannot decide are scored exactly (same operations), with the tie rule.
So the hits equal the exhaustive scoring's (the exact values are its own float values: `terms` is
bridge.cache_search.exact_terms on gathered pairs).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

# highest order J of the moments of D(γ) used as a polynomial (N_{J+1} bounds the rest)
MOMENT_ORDER = 2
# suspects per proxy (zero-shot logit, mean affinity, largest affinity, cache term at SUSPECT_BETA)
SUSPECTS_PER_PROXY = 3
SUSPECT_BETA = 3.5
# relative widening of the float32 upper bound (its own rounding is a few 1e-7)
RELATIVE_SLACK = 1e-4
# absolute slack per query, relative to max_c |base| + |l_y| (the exhaustive logits' rounding is ~1e-7 of that)
ABSOLUTE_SLACK = 1e-5
# elements of the [rows, C] tensors of the bound taken at a time (stay in the CPU's cache)
SCREEN_ELEMENTS = 1 << 18

Terms = Callable[[Tensor, Tensor, "Tensor | None", Tensor, Tensor], Tensor]


def applies(weight: Tensor, beta: Tensor, alpha: Tensor, gamma: Tensor) -> bool:
    """Whether the screen's bound holds: w ≥ 0 and β, α, γ ≥ 0 (the monotone case)."""
    return bool((weight >= 0).all()) and all(bool((t >= 0).all()) for t in (beta, alpha, gamma))


def _round_up(x: Tensor) -> Tensor:
    """float64 -> float32 rounded towards +inf (x ≥ 0)."""
    y = x.to(torch.float32)
    return torch.where(y.to(torch.float64) < x, torch.nextafter(y, torch.tensor(math.inf)), y)


def suspect_classes(aff: Tensor, base: Tensor, y: Tensor, per_proxy: int) -> Tensor:
    """[n, T] classes ≠ y most likely to beat y somewhere (T = 4·per_proxy, repeats possible): the top per_proxy
    by zero-shot logit, mean affinity, largest affinity and Σ_k exp(SUSPECT_BETA·(a − 1)). aff [n, C, K]."""
    n, c, _ = aff.shape
    per_proxy = min(per_proxy, c - 1)
    rows = torch.arange(n)
    picks = []
    for proxy in (base, aff.mean(-1), aff.amax(-1), torch.exp(SUSPECT_BETA * (aff - 1)).sum(-1)):
        p = proxy.clone()
        p[rows, y] = -math.inf
        picks.append(p.topk(per_proxy, 1).indices)
    return torch.cat(picks, 1)


class Screen:
    """One seed's (chunk of) real queries prepared for screening: aff [n, C, K], base [n, C] (working dtype), y [n],
    weight, div [C, K] (div may be None: no γ term). terms(aff [..., K], w, d, β [1], γ [1]) -> F [1, ...] is the
    exhaustive scoring's cache term (bridge.cache_search.exact_terms)."""

    def __init__(self, aff: Tensor, base: Tensor, y: Tensor, weight: Tensor, div: Tensor | None, terms: Terms):
        f64 = torch.float64
        self.aff, self.base, self.y, self.weight, self.div, self.terms = aff, base, y, weight, div, terms
        n, c, k = aff.shape
        real = weight != 0
        self.shift = float(div[real].min()) if div is not None and bool(real.any()) else 0.0
        delta = torch.zeros(c, k, dtype=f64) if div is None else \
            torch.where(real, (div.to(f64) - self.shift).clamp_min(0), torch.zeros((), dtype=f64))
        self.delta, self.w64 = delta, weight.to(f64)
        self.delta_max = float(delta.max()) if delta.numel() else 0.0
        amin, amax = aff.amin(-1), aff.amax(-1)                                           # [n, C]
        span = amax - amin
        orders = MOMENT_ORDER + 2
        wd = torch.stack([self.w64 * delta ** j for j in range(orders)])                 # [J+2, C, K]
        wd32 = _round_up(wd).to(aff.dtype)
        # per query: a_min − 1, a_max − 1, 1/span (0 where span = 0: then D = 0), the moments N_j  [n, 3 + J+2, C]
        self.packed = torch.empty(n, 3 + orders, c, dtype=aff.dtype)
        self.packed[:, 0], self.packed[:, 1] = amin - 1, amax - 1
        self.packed[:, 2] = torch.where(span > 0, 1 / span, torch.zeros_like(span)) * (1 + 1e-6)
        step = max(1, SCREEN_ELEMENTS // (c * k) * 4)
        for r0 in range(0, n, step):
            diff = aff[r0:r0 + step] - amin[r0:r0 + step].unsqueeze(-1)                   # ≥ 0 (monotone rounding)
            self.packed[r0:r0 + step, 3:] = torch.einsum("nck,jck->njc", diff, wd32) * (1 + 1e-5)   # + sums' rounding
        self.bmax = base.abs().amax(-1)                                                   # [n]
        self.base_y = base.gather(1, y.unsqueeze(1)).squeeze(1)
        self.suspects = suspect_classes(aff, base, y, SUSPECTS_PER_PROXY)                 # [n, T]
        rows = torch.arange(n)
        self.aff_y = aff[rows, y]                                                         # [n, K]
        self.aff_s = aff[rows.unsqueeze(1), self.suspects]                                # [n, T, K]
        self.base_s = base.gather(1, self.suspects)                                       # [n, T]

    def _exact(self, aff: Tensor, classes: Tensor, beta: Tensor, gamma: Tensor) -> Tensor:
        """F [...] of affinities aff [..., K] of classes [...] at one leaf (the exhaustive scoring's values)."""
        div = None if self.div is None else self.div[classes]
        return self.terms(aff, self.weight[classes], div, beta.view(1), gamma.view(1))[0]

    def leaf_right(self, beta: Tensor, gamma: Tensor, alpha: Tensor) -> tuple[Tensor, float]:
        """([m, n] whether each query is right at candidates (β, alphas[i], γ), pairs scored exactly) for one leaf:
        beta, gamma 0-d and alpha [m] in the working dtype."""
        n, c, _ = self.aff.shape
        y = self.y
        f_y = self._exact(self.aff_y, y, beta, gamma)                                     # [n]
        f_s = self._exact(self.aff_s, self.suspects, beta, gamma)                         # [n, T]
        a = alpha.view(-1, 1)
        l_y = self.base_y + a * f_y                                                       # [m, n]
        l_s = self.base_s + a.unsqueeze(-1) * f_s                                         # [m, n, T]
        before = self.suspects < y.unsqueeze(1)
        wrong = torch.where(before, l_s >= l_y.unsqueeze(-1), l_s > l_y.unsqueeze(-1)).any(-1)     # [m, n]
        right = torch.zeros_like(wrong)
        work = float(n * (1 + self.suspects.shape[1]) * alpha.shape[0])
        open_mask = (~wrong).any(0)
        if not bool(open_mask.any()):
            return right, work
        g, b = float(gamma), float(beta)
        total, coef = self.gamma_terms(g)
        folded = _round_up(alpha.to(torch.float64) * math.exp(g * self.shift) * (1 + RELATIVE_SLACK)).to(self.aff.dtype)
        step = max(1, SCREEN_ELEMENTS // c)
        for r0 in range(0, n, step):
            block = open_mask[r0:r0 + step]
            count = int(block.sum())
            if count == 0:
                continue
            if count * 2 >= block.numel():                                                # most rows open: no gather
                rows = torch.arange(r0, r0 + block.numel())
                bound = self._upper(slice(r0, r0 + block.numel()), b, total, coef)
            else:
                rows = block.nonzero().squeeze(1) + r0
                bound = self._upper(rows, b, total, coef)                                 # [r, C]
            for i in range(alpha.shape[0]):
                todo = ~wrong[i, rows]
                if bool(todo.any()):
                    work += self._certify(rows, todo, bound, folded[i], l_y[i], alpha[i], beta, gamma, right[i])
        return right, work

    def _certify(self, rows: Tensor, todo: Tensor, bound: Tensor, folded: Tensor, l_y: Tensor, alpha: Tensor,
                 beta: Tensor, gamma: Tensor, right: Tensor) -> float:
        """Mark right[rows] for the queries `todo` (no suspect beats y) that no class beats at this candidate: by
        the bound [r, C] (folded = A rounded up), else by scoring the undecided pairs exactly. Returns their count."""
        y = self.y
        y_r = y[rows]
        ly = l_y[rows]
        sigma = ABSOLUTE_SLACK * (self.bmax[rows] + ly.abs())
        upper = torch.addcmul(self.base[rows], bound, folded)
        upper[torch.arange(rows.numel()), y_r] = -math.inf
        limit = ly - sigma
        sure = upper.amax(1) < limit
        open_ = todo & ~sure
        right[rows[todo & sure]] = True
        if not bool(open_.any()):
            return 0.0
        pq, pc = (upper >= limit.unsqueeze(1)).logical_and_(open_.unsqueeze(1)).nonzero(as_tuple=True)  # undecided
        q = rows[pq]
        lc = self.base[q, pc] + alpha * self._exact(self.aff[q, pc], pc, beta, gamma)
        ly_p = l_y[q]
        beats = torch.where(pc < y[q], lc >= ly_p, lc > ly_p)
        lost = torch.zeros(rows.numel(), dtype=torch.bool)
        lost[pq[beats]] = True
        right[rows[open_ & ~lost]] = True
        return float(pq.numel())

    def gamma_terms(self, gamma: float) -> tuple[Tensor, Tensor]:
        """(W(γ) [C], the moments' coefficients [J+2]: γ^j/j! for j ≤ J, then exp(γ δ_max)·γ^{J+1}/(J+1)!), rounded
        up to the working dtype."""
        total = (self.w64 * torch.exp(self.delta * gamma)).sum(-1)
        coef = [gamma ** j / math.factorial(j) for j in range(MOMENT_ORDER + 1)]
        coef.append(math.exp(gamma * self.delta_max) * gamma ** (MOMENT_ORDER + 1) / math.factorial(MOMENT_ORDER + 1))
        dtype = self.aff.dtype
        return _round_up(total).to(dtype), _round_up(torch.tensor(coef, dtype=torch.float64)).to(dtype)

    def _upper(self, rows: Tensor | slice, beta: float, total: Tensor, coef: Tensor) -> Tensor:
        """[r, C] upper bound of G (module docstring) for the queries `rows` at β and the γ of `total` (W(γ) [C]) and
        `coef` ([J+2] the moments' coefficients). exp(β (a_max − 1)) − exp(β (a_min − 1)) is taken with the larger
        term widened by its rounding (both exps and a − 1), so the chord's slope stays an upper bound."""
        packed = self.packed[rows]                                                        # [r, 3 + J+2, C]
        low = torch.mul(packed[:, 0], beta).exp_()                                        # exp(β (a_min − 1))
        widen = math.log1p((16 + 4 * beta) * 2.0 ** -24)
        high = torch.mul(packed[:, 1], beta).add_(widen).exp_()                           # widened by its rounding
        slope = high.sub_(low).mul_(packed[:, 2])                                         # ≥ (e^{β·span} − 1)·low/span
        d = torch.matmul(coef, packed[:, 3:])                                             # D(γ) bound [r, C]
        return torch.addcmul(d.mul_(slope), low, total)          # float32 rounding: folded α carries the slack


def screened_hits(screen: Screen, beta: Tensor, alpha: Tensor, gamma: Tensor) -> tuple[Tensor, float]:
    """(right queries [m], pairs scored exactly) of candidates beta, alpha, gamma [m] (working dtype), leaf by leaf."""
    m = beta.shape[0]
    leaves, inverse = torch.unique(torch.stack([beta, gamma], -1), dim=0, return_inverse=True)
    out = torch.zeros(m, dtype=torch.int64)
    work = 0.0
    for leaf in range(leaves.shape[0]):
        cand = (inverse == leaf).nonzero().squeeze(1)
        right, w = screen.leaf_right(leaves[leaf, 0], leaves[leaf, 1], alpha[cand])
        out[cand] = right.sum(1)
        work += w
    return out, work
