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
Many α at one leaf (a grid): each class's constraint is a half-line in α, so each query's sure α form one interval
(`_zones`), and the classes whose ends fall among the α left are scored once and compared at each α. Several leaves
(`box_right`, grouped by `leaf_boxes`): with B = α·exp(γ d₀ + β x_r) per query, H_c = exp(−β x_r)·G_c is convex in β
and grows with γ, so the larger of its chord bounds at the smallest and largest β (largest γ) bounds it over the box,
and every (leaf, α) item whose B lies in the query's sure interval is right; the rest go leaf by leaf.
So the hits equal the exhaustive scoring's (the exact values are its own float values: bridge.cache_search's
key_factors times its key_scales of the leaf's γ, gathered per pair, summed over keys, as exact_terms).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from clipbridge.bridge.cache_suspects import Factors, Scales, Suspects, leaves_of, take_pairs
from clipbridge.bridge.precision import full_products

# highest order J of the moments of D(γ) used as a polynomial (N_{J+1} bounds the rest)
MOMENT_ORDER = 2
# candidates per leaf from which a query's sure α are found as one interval (`Screen._zones`) instead of α by α
ZONE_ALPHAS = 4
# leaves of one γ (consecutive β) whose items are first decided together (Screen.box_right)
BOX_LEAVES = 16
# γ bins and β spans of the boxes of spread-out leaves (leaf_boxes)
BOX_GAMMA = 0.06
BOX_BETA = 0.6
# critical classes per query (on average) up to which a box's items left are scored exactly on them
CRITICAL_CLASSES = 64
# relative widening of the float32 upper bound (its own rounding is a few 1e-7)
RELATIVE_SLACK = 1e-4
# absolute slack per query, relative to max_c |base| + |l_y| (the exhaustive logits' rounding is ~1e-7 of that)
ABSOLUTE_SLACK = 1e-5
# elements of the [rows, C] tensors of the bound taken at a time (stay in the CPU's cache)
SCREEN_ELEMENTS = 1 << 18



def applies(weight: Tensor, beta: Tensor, alpha: Tensor, gamma: Tensor) -> bool:
    """Whether the screen's bound holds: w ≥ 0 and β, α, γ ≥ 0 (the monotone case)."""
    return bool((weight >= 0).all()) and all(bool((t >= 0).all()) for t in (beta, alpha, gamma))


def divergence_shift(weight: Tensor, div: Tensor | None) -> tuple[float, Tensor | None]:
    """(shift, d − shift in float64 [C, K]) with shift = the smallest divergence of a real key (w ≠ 0; padded keys
    get 0). The bounds (bridge.cache_search's and Screen's) work with G = Σ_k w_k exp(γ (d_k − shift)) exp(β (a_k − 1)),
    F = exp(γ·shift)·G, and fold the common factor into α (bridge.cache_search.folded_alphas): APE's divergences
    are large and close together (≈ 9.5-10 on the synthetic ImageNet-sized cache), so exp(γ d) alone would make
    every bound over a γ range loose by exp(Δγ·d), where exp(Δγ·(d − shift)) is close to 1; the shifted
    divergences stay ≥ 0 (monotone case)."""
    if div is None:
        return 0.0, None
    real = weight != 0
    shift = float(div[real].min()) if bool(real.any()) else 0.0
    return shift, torch.where(real, div.to(torch.float64) - shift, torch.zeros((), dtype=torch.float64))


def _round_up(x: Tensor) -> Tensor:
    """float64 -> float32 rounded towards +inf (x ≥ 0)."""
    y = x.to(torch.float32)
    return torch.where(y.to(torch.float64) < x, torch.nextafter(y, torch.tensor(math.inf)), y)


class Screen(Suspects):
    """One seed's (chunk of) real queries prepared for screening: their suspects (bridge.cache_suspects.Suspects,
    same arguments) and the per-pair bound's tables, which keep aff [n, C, K] and base [n, C]."""

    def __init__(self, aff: Tensor, base: Tensor, y: Tensor, weight: Tensor, div: Tensor | None, factors: Factors,
                 scales: Scales):
        f64 = torch.float64
        amin, amax = aff.amin(-1), aff.amax(-1)                                           # [n, C]
        super().__init__(aff, base, y, weight, div, factors, scales, amax)
        self.aff, self.base = aff, base
        n, c, k = aff.shape
        self.shift, shifted = divergence_shift(weight, div)
        delta = torch.zeros(c, k, dtype=f64) if shifted is None else shifted                # ≥ 0
        self.delta, self.w64 = delta, weight.to(f64)
        self.delta_max = float(delta.max()) if delta.numel() else 0.0
        span = amax - amin
        orders = MOMENT_ORDER + 2
        wd = torch.stack([self.w64 * delta ** j for j in range(orders)])                 # [J+2, C, K]
        wd32 = _round_up(wd).to(aff.dtype)
        # per query: base, a_min − 1, a_max − 1, 1/span (0 where span = 0: then D = 0), the moments N_j
        # [n, 4 + J+2, C] (one gather per block of rows)
        self.packed = torch.empty(n, 4 + orders, c, dtype=aff.dtype)
        self.packed[:, 0], self.packed[:, 1], self.packed[:, 2] = base, amin - 1, amax - 1
        self.packed[:, 3] = torch.where(span > 0, 1 / span, torch.zeros_like(span)) * (1 + 1e-6)
        step = max(1, SCREEN_ELEMENTS // (c * k) * 4)
        with full_products():                       # float32 rounding, whatever product precision the fit runs at
            for r0 in range(0, n, step):
                diff = aff[r0:r0 + step] - amin[r0:r0 + step].unsqueeze(-1)               # ≥ 0 (monotone rounding)
                self.packed[r0:r0 + step, 4:] = torch.einsum("nck,jck->njc", diff, wd32) * (1 + 1e-5)  # + rounding
        self.bmax = base.abs().amax(-1)                                                   # [n]
        self.x_ref = self.aff_y.to(f64).mean(-1) - 1                                      # [n] (box_right)

    def pairs(self, q: Tensor, c: Tensor) -> Tensor:
        """aff[q, c] [..., K] for query and class indices q, c broadcastable to [...]."""
        return take_pairs(self.aff, q, c)

    def leaf_right(self, beta: Tensor, gamma: Tensor, alpha: Tensor) -> tuple[Tensor, float]:
        """([m, n] whether each query is right at candidates (β, alphas[i], γ), pairs scored exactly) for one leaf:
        beta, gamma 0-d and alpha [m] in the working dtype."""
        f_y, l_y, wrong, work = self.witness(beta, gamma, alpha)
        right = torch.zeros_like(wrong)
        return right, work + self.settle(beta, gamma, alpha, f_y, l_y, ~wrong, right)

    def box_right(self, betas: Tensor, gammas: Tensor, alphas: list[Tensor]) -> tuple[list[Tensor], float]:
        """Right queries [m_j, n] of the leaves (betas[j], gammas[j]), alphas[j] [m_j], and the pairs scored exactly.
        With x_r = the mean of a − 1 over the query's true-class keys, l_c = base_c + B·H_c where
        B = α·exp(γ d₀ + β x_r) and H_c(β, γ) = exp(−β x_r)·G_c(β, γ) is convex in β and grows with γ (w, δ ≥ 0), so
        over the leaves it stays below the larger of its chord bounds at the smallest and largest β and the largest
        γ (Ĥ_c), and H_y above its smallest exact value at the leaves (Ȟ_y):
        every item (leaf, α) whose B lies where every class surely loses, (base_c − base_y + σ) + B·(Ĥ_c − Ȟ_y) < 0,
        is right; the rest are settled leaf by leaf."""
        seen = [self.witness(b, g, a) for b, g, a in zip(betas, gammas, alphas)]
        rights = [torch.zeros_like(w[2]) for w in seen]
        todos = [~w[2] for w in seen]
        work = sum(w[3] for w in seen)
        open_mask = torch.stack([t.any(0) for t in todos]).any(0)
        if bool(open_mask.any()):
            b_ends = (float(betas.min()), float(betas.max()))
            total, coef = self.gamma_terms(float(gammas.max()))
            x_r = self.x_ref
            scale = [_round_up(torch.exp(-b * x_r)).to(self.aff.dtype) for b in b_ends]    # exp(−β x_r) [n]
            h_y = torch.stack([w[0].to(torch.float64) * torch.exp(-float(g) * self.shift - float(b) * x_r)
                               for w, b, g in zip(seen, betas, gammas)]).amin(0) * (1 - RELATIVE_SLACK)
            h_y = h_y.to(self.aff.dtype)                                                   # rounding: in the slack
            items = [(a.to(torch.float64).view(-1, 1) * torch.exp(float(g) * self.shift + float(b) * x_r))
                     .to(self.aff.dtype) for a, b, g in zip(alphas, betas, gammas)]                                       # B [m_j, n]
            sigma = ABSOLUTE_SLACK * (self.bmax + self.base_y.abs())
            step = max(1, SCREEN_ELEMENTS // self.aff.shape[1])
            for r0 in range(0, open_mask.numel(), step):
                rows = open_mask[r0:r0 + step].nonzero().squeeze(1) + r0
                if rows.numel() == 0:
                    continue
                packed = self.packed[rows]
                h_c = torch.maximum(self._upper(packed, b_ends[0], total, coef).mul_(scale[0][rows].unsqueeze(1)),
                                    self._upper(packed, b_ends[1], total, coef).mul_(scale[1][rows].unsqueeze(1)))
                margin = packed[:, 0] - (self.base_y[rows] - sigma[rows]).unsqueeze(1)
                slope = h_c.mul_(1 + RELATIVE_SLACK).sub_(h_y[rows].unsqueeze(1))
                ends, pad, rising, falling, stays, lo, hi = _intervals(margin, slope, self.y[rows])
                free = ~stays.any(1)
                b_hi = torch.full((rows.numel(),), -math.inf, dtype=self.aff.dtype)          # B range left per query
                b_lo = torch.full((rows.numel(),), math.inf, dtype=self.aff.dtype)
                for j, t in enumerate(items):
                    b_rows = t[:, rows]
                    todo = todos[j][:, rows]
                    sure = (b_rows > lo) & (b_rows < hi) & free & todo
                    rights[j][:, rows] |= sure
                    todo &= ~sure
                    todos[j][:, rows] = todo
                    b_hi = torch.maximum(b_hi, torch.where(todo, b_rows, -math.inf).amax(0))
                    b_lo = torch.minimum(b_lo, torch.where(todo, b_rows, math.inf).amin(0))
                left = (b_hi >= b_lo).nonzero().squeeze(1)
                if left.numel() == 0:
                    continue
                critical = ((rising[left] & (ends[left] - pad[left] <= b_hi[left].unsqueeze(1)))
                            | (falling[left] & (ends[left] + pad[left] >= b_lo[left].unsqueeze(1))) | stays[left])
                pr, pc = critical.nonzero(as_tuple=True)
                if pr.numel() > CRITICAL_CLASSES * left.numel():
                    continue                                                              # settled leaf by leaf
                work += self._settle_critical(rows[left], pr, pc, betas, gammas, alphas, seen, todos, rights)
        for j, (b, g, a) in enumerate(zip(betas, gammas, alphas)):
            work += self.settle(b, g, a, seen[j][0], seen[j][1], todos[j], rights[j])
        return rights, work

    def _settle_critical(self, rows: Tensor, pr: Tensor, pc: Tensor, betas: Tensor, gammas: Tensor,
                         alphas: list[Tensor], seen: list, todos: list[Tensor], rights: list[Tensor]) -> float:
        """Decide every item left of the queries `rows` at the box's leaves by scoring exactly their critical pairs
        (rows[pr], pc): the classes that do not surely lose at every item left of the query (box_right); the other
        classes surely lose at all of them. Returns the pairs scored exactly."""
        q = rows[pr]
        aff, base_c = self.pairs(q, pc), self.base[q, pc]
        work = 0.0
        for j, (b, g, a) in enumerate(zip(betas, gammas, alphas)):
            todo = todos[j][:, rows]                                                      # [m_j, r]
            if not bool(todo.any()):
                continue
            lc = base_c + a.view(-1, 1) * self._exact(aff, pc, b, g)                 # [m_j, P]
            ly = seen[j][1][:, q]
            beats = torch.where(pc < self.y[q], lc >= ly, lc > ly)
            lost = torch.zeros(todo.shape, dtype=torch.int32).index_add_(1, pr, beats.to(torch.int32)) > 0
            rights[j][:, rows] |= todo & ~lost
            todos[j][:, rows] = torch.zeros_like(todo)
            work += float(pr.numel() * a.shape[0])
        return work

    def settle(self, beta: Tensor, gamma: Tensor, alpha: Tensor, f_y: Tensor, l_y: Tensor, todo_all: Tensor,
               right: Tensor) -> float:
        """Decide the items todo_all [m, n] (no suspect beats y) of one leaf, marking right [m, n]: the bound per pair,
        then α by α (`_certify`) or all α at once (`_zones`). Returns the pairs scored exactly."""
        n, c, _ = self.aff.shape
        work = 0.0
        open_mask = todo_all.any(0)
        if not bool(open_mask.any()):
            return work
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
                packed = self.packed[r0:r0 + block.numel()]
            else:
                rows = block.nonzero().squeeze(1) + r0
                packed = self.packed[rows]                                                # [r, 4 + J+2, C]
            bound = self._upper(packed, b, total, coef)
            todo = todo_all[:, rows]                                                      # [m, r]
            base = packed[:, 0]
            if alpha.shape[0] >= ZONE_ALPHAS:                    # all α at once: each query's interval of sure α
                work += self._zones(rows, todo, base, bound, math.exp(g * self.shift) * (1 + RELATIVE_SLACK), f_y,
                                    l_y, alpha, beta, gamma, right)
                continue
            which, local = todo.nonzero(as_tuple=True)                                  # (candidate, row) left
            if which.numel():
                work += self._certify(rows, local, which, base, bound, folded, l_y, alpha, beta, gamma, right)
        return work

    def _zones(self, rows: Tensor, todo: Tensor, base: Tensor, bound: Tensor, factor: float, f_y: Tensor,
               l_y: Tensor, alpha: Tensor, beta: Tensor, gamma: Tensor, right: Tensor) -> float:
        """Decide the items todo [m, r] (candidate i, query rows[j]; no suspect beats y) of all α at once; returns the
        pairs scored exactly. Class c surely loses to y where (base_c − base_y + σ) + α·(factor·U_c − F_y) < 0
        (factor = exp(γ d₀) widened, U_c = bound [r, C], σ the slack at the largest α): on one side of its end
        −(base_c − base_y + σ)/(factor·U_c − F_y), moved inwards by a relative 1e-5 against rounding. A query is
        right at the α where every class surely loses; for its other items, the classes whose end lies among
        those α (or that never surely lose) are scored exactly once and compared at each α (tie rule)."""
        y_r = self.y[rows]
        fy = f_y[rows]
        base_y = self.base_y[rows]
        sigma = ABSOLUTE_SLACK * (self.bmax[rows] + base_y.abs() + float(alpha.max()) * fy.abs())
        ends, pad, rising, falling, stays, lo, hi = _intervals(base - (base_y - sigma).unsqueeze(1),
                                                               torch.mul(bound, factor).sub_(fy.unsqueeze(1)), y_r)
        a = alpha.view(-1, 1)
        sure = (a > lo) & (a < hi) & ~stays.any(1) & todo                                 # [m, r]
        right[:, rows] |= sure
        left = todo & ~sure
        open_rows = left.any(0).nonzero().squeeze(1)
        if open_rows.numel() == 0:
            return 0.0
        big = torch.tensor(math.inf, dtype=alpha.dtype)
        a_hi = torch.where(left[:, open_rows], a, -big).amax(0).unsqueeze(1)              # α range left per query
        a_lo = torch.where(left[:, open_rows], a, big).amin(0).unsqueeze(1)
        critical = ((rising[open_rows] & (ends[open_rows] - pad[open_rows] <= a_hi))
                    | (falling[open_rows] & (ends[open_rows] + pad[open_rows] >= a_lo)) | stays[open_rows])
        pr, pc = critical.nonzero(as_tuple=True)
        q = rows[open_rows[pr]]
        f = self._exact(self.pairs(q, pc), pc, beta, gamma)                               # [P], every α alike
        lc = self.base[q, pc] + a * f                                                     # [m, P]
        ly = l_y[:, q]
        beats = torch.where(pc < self.y[q], lc >= ly, lc > ly)
        lost = torch.zeros(alpha.shape[0], open_rows.numel(), dtype=torch.int32).index_add_(
            1, pr, beats.to(torch.int32)) > 0
        ok = left[:, open_rows] & ~lost
        sub = right[:, rows]
        sub[:, open_rows] |= ok
        right[:, rows] = sub
        return float(pr.numel() * alpha.shape[0])

    def _certify(self, rows: Tensor, local: Tensor, which: Tensor, base: Tensor, bound: Tensor, folded: Tensor,
                 l_y: Tensor, alpha: Tensor, beta: Tensor, gamma: Tensor, right: Tensor) -> float:
        """Decide the (candidate which[i], query rows[local[i]]) items (no suspect beats y): right where every class
        is below y by the bound (bound [r, C] of the rows, base their zero-shot logits, folded = A rounded up [m]),
        else by scoring the undecided pairs exactly (torch.argmax's tie rule). Returns the pairs scored exactly."""
        q_all = rows[local]
        ly = l_y[which, q_all]
        limit = ly - ABSOLUTE_SLACK * (self.bmax[q_all] + ly.abs())
        if folded.shape[0] == 1 and 2 * local.numel() >= rows.numel():          # one α, most rows: no gather
            upper = torch.addcmul(base, bound, folded)                                    # [r, C]
            upper[torch.arange(rows.numel()), self.y[rows]] = -math.inf
            sure = upper.amax(1)[local] < limit
            pick = local
        else:
            upper = torch.addcmul(base[local], bound[local], folded[which].unsqueeze(1))  # [P, C]
            upper[torch.arange(local.numel()), self.y[q_all]] = -math.inf
            sure = upper.amax(1) < limit
            pick = torch.arange(local.numel())
        right[which[sure], q_all[sure]] = True
        undecided = (~sure).nonzero().squeeze(1)
        if undecided.numel() == 0:
            return 0.0
        pu, pc = (upper[pick[undecided]] >= limit[undecided].unsqueeze(1)).nonzero(as_tuple=True)
        item = undecided[pu]                                                              # pairs to score exactly
        q = q_all[item]
        lc = self.base[q, pc] + alpha[which[item]] * self._exact(self.pairs(q, pc), pc, beta, gamma)
        ly_p = ly[item]
        beats = torch.where(pc < self.y[q], lc >= ly_p, lc > ly_p)
        lost = torch.zeros(local.numel(), dtype=torch.bool)
        lost[item[beats]] = True
        ok = undecided[~lost[undecided]]
        right[which[ok], q_all[ok]] = True
        return float(item.numel())

    def gamma_terms(self, gamma: float) -> tuple[Tensor, Tensor]:
        """(W(γ) [C], the moments' coefficients [J+2]: γ^j/j! for j ≤ J, then exp(γ δ_max)·γ^{J+1}/(J+1)!), rounded
        up to the working dtype."""
        total = (self.w64 * torch.exp(self.delta * gamma)).sum(-1)
        coef = [gamma ** j / math.factorial(j) for j in range(MOMENT_ORDER + 1)]
        coef.append(math.exp(gamma * self.delta_max) * gamma ** (MOMENT_ORDER + 1) / math.factorial(MOMENT_ORDER + 1))
        dtype = self.aff.dtype
        return _round_up(total).to(dtype), _round_up(torch.tensor(coef, dtype=torch.float64)).to(dtype)

    @staticmethod
    def _upper(packed: Tensor, beta: float, total: Tensor, coef: Tensor) -> Tensor:
        """[r, C] upper bound of G (module docstring) for the rows `packed` (of self.packed) at β and the γ of `total`
        (W(γ) [C]) and `coef` ([J+2] the moments' coefficients). exp(β (a_max − 1)) − exp(β (a_min − 1)) is taken
        with the larger term widened by its rounding (both exps and a − 1), so the chord's slope stays an upper
        bound; the float32 rounding of the rest (positive terms, a few ulp) is covered by the folded α's slack."""
        low = torch.mul(packed[:, 1], beta).exp_()                                        # exp(β (a_min − 1))
        widen = math.log1p((16 + 4 * beta) * 2.0 ** -24)
        high = torch.mul(packed[:, 2], beta).add_(widen).exp_()                           # widened by its rounding
        slope = high.sub_(low).mul_(packed[:, 3])                                         # ≥ (e^{β·span} − 1)·low/span
        with full_products():
            d = torch.matmul(coef, packed[:, 4:])                                         # D(γ) bound [r, C]
        return torch.addcmul(d.mul_(slope), low, total)          # float32 rounding: folded α carries the slack


def _intervals(margin: Tensor, slope: Tensor, y: Tensor):
    """Where class c surely loses, margin_c + t·slope_c < 0 ([r, C] each; y [r] is no constraint), as one interval
    (lo, hi) of t per query: (ends −margin/slope, their pads 1e-5·|end| against rounding, rising = slope > 0 (c loses
    below its end), falling = slope < 0 (above it), stays = c never surely loses, lo [r], hi [r])."""
    local = torch.arange(margin.shape[0])
    margin[local, y] = -math.inf
    slope[local, y] = 1.0
    ends = torch.div(margin, slope).neg_()
    pad = torch.where(ends.isfinite(), ends.abs().mul_(1e-5), 0.0)                     # inf − inf would be NaN
    inf = torch.tensor(math.inf)
    rising, falling = slope > 0, slope < 0
    stays = (slope == 0) & (margin >= 0)
    hi = torch.where(rising, ends - pad, inf).amin(1)
    lo = torch.where(falling, ends + pad, -inf).amax(1)
    return ends, pad, rising, falling, stays, lo, hi


def leaf_boxes(leaves: Tensor, counts: list[int]) -> list[list[int]]:
    """Groups of leaves ([L, 2] (γ, β), sorted γ-major; counts = candidates per leaf) decided together by
    Screen.box_right: grid leaves (≥ ZONE_ALPHAS α each) in runs of consecutive β at one γ; other leaves by γ bins of
    BOX_GAMMA and, inside a bin, runs of β spanning at most BOX_BETA; at most BOX_LEAVES leaves each. Any grouping
    gives the same hits (the bound holds for any set of leaves); these keep the boxes tight."""
    groups, single = [], []
    start = 0
    while start < leaves.shape[0]:                                       # grid leaves: runs of β at one γ
        stop = start + 1
        if counts[start] >= ZONE_ALPHAS:
            while (stop < leaves.shape[0] and stop - start < BOX_LEAVES and leaves[stop, 0] == leaves[start, 0]
                   and counts[stop] >= ZONE_ALPHAS):
                stop += 1
            groups.append(list(range(start, stop)))
        else:
            single.append(start)
        start = stop
    bins: dict = {}
    for i in single:
        bins.setdefault(math.floor(float(leaves[i, 0]) / BOX_GAMMA), []).append(i)
    for members in bins.values():
        members.sort(key=lambda i: float(leaves[i, 1]))
        group = [members[0]]
        for i in members[1:]:
            if len(group) < BOX_LEAVES and float(leaves[i, 1] - leaves[group[0], 1]) <= BOX_BETA:
                group.append(i)
            else:
                groups.append(group)
                group = [i]
        groups.append(group)
    return groups


def screened_hits(screen: Screen, beta: Tensor, alpha: Tensor, gamma: Tensor) -> tuple[Tensor, float]:
    """(right queries [m], pairs scored exactly) of candidates beta, alpha, gamma [m] (working dtype): groups of leaves
    (`leaf_boxes`) by Screen.box_right, single leaves by Screen.leaf_right."""
    m = beta.shape[0]
    leaves, cands = leaves_of(beta, gamma)
    out = torch.zeros(m, dtype=torch.int64)
    work = 0.0
    for group in leaf_boxes(leaves, [c.numel() for c in cands]):
        if len(group) == 1:
            right, w = screen.leaf_right(leaves[group[0], 1], leaves[group[0], 0], alpha[cands[group[0]]])
            rights = [right]
        else:
            rights, w = screen.box_right(leaves[group, 1], leaves[group, 0], [alpha[cands[j]] for j in group])
        for j, right in zip(group, rights):
            out[cands[j]] = right.sum(1)
        work += w
    return out, work
