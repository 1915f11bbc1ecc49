"""Batched L-BFGS: P independent smooth minimisation problems solved side by side, each on its own.

    result = minimize(objective, x0, max_iter=1000, tol=1e-4)

`objective(x [P', n], rows [P'] int64) -> (value [P'], gradient [P', n])` evaluates the problems named by
`rows` (indices into the batch of P) at the points x; the solver calls it on ever smaller subsets as
problems finish or leave a line search, so it must not mix problems. Every quantity of the algorithm is per
problem: the history of the last `history` steps, the initial Hessian scaling, the line search (trial step,
acceptance, interpolation) and the stopping test. Solving a batch is therefore the same computation as solving
each problem alone (equal up to the floating-point summation order of the kernels underneath, which does
not change with the batch for the tensor sizes we use).

Algorithm (Nocedal & Wright, Numerical Optimization, 2nd ed., Alg. 7.4 and 7.5), per problem:
  direction  d = −H g by the two-loop recursion over the pairs (s, y) stored by the last `history`
             iterations (a pair failing the curvature test s·y > ε y·y is not used), H0 = γ I with
             γ = s·y / y·y of the newest used pair, or γ = 1/‖g‖₂ when there is none (first step: unit length);
  step       backtracking from t = 1: accept the first t with f(x + t d) ≤ f(x) + 1e-4 · t · g·d (Armijo),
             otherwise the minimiser of the quadratic through f(x), g·d and f(x + t d), kept in [0.1 t, 0.5 t];
             at most `max_line_search` trials.
Stopping, per problem (status codes):
  GRADIENT   max_i |g_i| ≤ tol (scipy's L-BFGS-B projected-gradient test, no bounds here; scikit-learn
             passes its `tol` as this `gtol`),
  DECREASE   an accepted step lowered f by ≤ ftol · max(|f_old|, |f_new|, 1) (scipy's `ftol`; the default
             64·2⁻⁵² is the value scikit-learn passes),
  LINE_SEARCH no trial step satisfied the Armijo test (in float32 close to the optimum f stops decreasing
             representably); the last accepted point is kept,
  CAP        `max_iter` iterations done without meeting either test (the last iterate is returned, as
             scipy does at maxiter).
GRADIENT and DECREASE count as converged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError

Objective = Callable[[Tensor, Tensor], "tuple[Tensor, Tensor]"]

GRADIENT, DECREASE, LINE_SEARCH, CAP = 0, 1, 2, 3
STATUS_NAMES = ("gradient", "decrease", "line_search", "cap")
FTOL = 64 * 2.0 ** -52
ARMIJO = 1e-4


@dataclass
class LbfgsResult:
    """x [P, n] last accepted iterates, value [P] objective there, iterations [P] int64 accepted steps,
    status [P] int64 (GRADIENT, DECREASE, LINE_SEARCH or CAP; see the module docstring)."""

    x: Tensor
    value: Tensor
    iterations: Tensor
    status: Tensor

    @property
    def converged(self) -> Tensor:
        """[P] bool: stopped by the gradient or the decrease test."""
        return self.status <= DECREASE


def minimize(objective: Objective, x0: Tensor, *, max_iter: int = 1000, tol: float = 1e-4, history: int = 10,
             max_line_search: int = 20, ftol: float = FTOL) -> LbfgsResult:
    """Minimise the P problems of `objective` from x0 [P, n]; see the module docstring."""
    if x0.ndim != 2:
        raise BridgeInputError(f"L-BFGS needs x0 as [P, n], got {list(x0.shape)}")
    if max_iter < 0 or history < 1 or max_line_search < 1 or not tol >= 0:
        raise BridgeInputError(f"L-BFGS needs max_iter >= 0, history >= 1, max_line_search >= 1 and tol >= 0, "
                               f"got {max_iter}, {history}, {max_line_search}, {tol}")
    p, n = x0.shape
    rows = torch.arange(p, device=x0.device)
    x = x0.clone()
    f, g = objective(x, rows)
    out = LbfgsResult(x=x.clone(), value=f.clone(), iterations=torch.zeros(p, dtype=torch.long, device=x.device),
                      status=torch.full((p,), CAP, dtype=torch.long, device=x.device))
    state = _History(p, history, n, x)
    finished = g.abs().amax(-1) <= tol
    out.status[rows[finished]] = GRADIENT
    rows, x, f, g, state = _keep(~finished, rows, x, f, g, state)
    eps = torch.finfo(x.dtype).eps
    for k in range(max_iter):
        if rows.numel() == 0:
            break
        d = -state.apply_inverse_hessian(g, k)
        slope = (g * d).sum(-1)                                                   # [P'] < 0
        t, f_new, g_new, accepted = _backtrack(objective, rows, x, f, g, d, slope, max_line_search)
        step = t.unsqueeze(-1) * d
        y = g_new - g
        sy, yy = (step * y).sum(-1), (y * y).sum(-1)
        state.store(k, step, y, sy, yy, accepted & (sy > eps * yy))
        x = torch.where(accepted.unsqueeze(-1), x + step, x)
        small_gradient = g_new.abs().amax(-1) <= tol
        no_decrease = (f - f_new) <= ftol * torch.maximum(torch.maximum(f.abs(), f_new.abs()), torch.ones_like(f))
        f, g = torch.where(accepted, f_new, f), torch.where(accepted.unsqueeze(-1), g_new, g)
        status = torch.where(small_gradient, GRADIENT, torch.where(no_decrease, DECREASE, CAP))
        status = torch.where(accepted, status, LINE_SEARCH)
        finished = status != CAP
        out.iterations[rows] = k + accepted.long()
        if bool(finished.any()):
            done = rows[finished]
            out.x[done], out.value[done], out.status[done] = x[finished], f[finished], status[finished]
        rows, x, f, g, state = _keep(~finished, rows, x, f, g, state)
    out.x[rows], out.value[rows] = x, f                                           # status CAP
    return out


def _keep(mask: Tensor, rows: Tensor, x: Tensor, f: Tensor, g: Tensor, state: "_History"):
    """The working set restricted to the problems where mask [P'] is True (no copy when all are)."""
    if bool(mask.all()):
        return rows, x, f, g, state
    return rows[mask], x[mask], f[mask], g[mask], state.select(mask)


def _backtrack(objective: Objective, rows: Tensor, x: Tensor, f: Tensor, g: Tensor, d: Tensor, slope: Tensor,
               max_trials: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Armijo backtracking from t = 1 for every problem of the working set.

    x, d, g [P', n], f, slope [P']. Returns t [P'], f and g at x + t d (f, g where not accepted) and
    accepted [P'] bool.
    """
    t = torch.ones_like(f)
    f_new, g_new = f.clone(), g.clone()
    accepted = torch.zeros_like(f, dtype=torch.bool)
    todo = torch.arange(f.shape[0], device=f.device)
    for _ in range(max_trials):
        tt = t[todo]
        value, grad = objective(x[todo] + tt.unsqueeze(-1) * d[todo], rows[todo])
        ok = value <= f[todo] + ARMIJO * tt * slope[todo]                         # NaN/Inf: not ok
        hit = todo[ok]
        f_new[hit], g_new[hit], accepted[hit] = value[ok], grad[ok], True
        miss = ~ok
        excess = value[miss] - f[todo[miss]] - slope[todo[miss]] * tt[miss]       # > 0 where finite
        quadratic = -slope[todo[miss]] * tt[miss] ** 2 / (2 * excess)
        quadratic = torch.where(torch.isfinite(quadratic) & (excess > 0), quadratic, 0.5 * tt[miss])
        t[todo[miss]] = torch.minimum(torch.maximum(quadratic, 0.1 * tt[miss]), 0.5 * tt[miss])
        todo = todo[miss]
        if todo.numel() == 0:
            break
    return t, f_new, g_new, accepted


class _History:
    """The (s, y) pairs of the last m iterations of each problem in the working set.

    Iteration k writes slot k mod m for every problem (a ring buffer shared in time, since all problems of a
    working set iterate in lockstep from k = 0); `used` [P', m] marks the pairs the recursion may use.
    """

    def __init__(self, p: int, m: int, n: int, like: Tensor) -> None:
        self.m = m
        self.s = like.new_zeros(p, m, n)
        self.y = like.new_zeros(p, m, n)
        self.rho = like.new_zeros(p, m)                # 1 / s·y, 0 for unused pairs
        self.gamma = like.new_zeros(p, m)              # s·y / y·y
        self.used = torch.zeros(p, m, dtype=torch.bool, device=like.device)

    def select(self, mask: Tensor) -> "_History":
        other = object.__new__(_History)
        other.m = self.m
        for name in ("s", "y", "rho", "gamma", "used"):
            setattr(other, name, getattr(self, name)[mask])
        return other

    def store(self, k: int, s: Tensor, y: Tensor, sy: Tensor, yy: Tensor, use: Tensor) -> None:
        """Write iteration k's pairs s, y [P', n] (sy, yy [P'] = s·y, y·y) into slot k mod m; use [P'] bool."""
        slot = k % self.m
        safe = torch.where(use, sy, torch.ones_like(sy))
        self.s[:, slot], self.y[:, slot] = s, y
        self.rho[:, slot] = torch.where(use, 1.0 / safe, torch.zeros_like(sy))
        self.gamma[:, slot] = torch.where(use, safe / torch.where(use, yy, torch.ones_like(yy)), torch.zeros_like(sy))
        self.used[:, slot] = use

    def apply_inverse_hessian(self, g: Tensor, k: int) -> Tensor:
        """H g [P', n] at iteration k (slots of iterations k−1, k−2, … newest first), two-loop recursion."""
        order = [(k - 1 - j) % self.m for j in range(min(k, self.m))]
        q = g.clone()
        alpha = []
        for slot in order:
            a = self.rho[:, slot] * (self.s[:, slot] * q).sum(-1)                  # 0 for unused pairs
            q = q - a.unsqueeze(-1) * self.y[:, slot]
            alpha.append(a)
        gamma = 1.0 / g.norm(dim=-1)
        for slot in reversed(order):                   # oldest first, so the newest used pair's γ wins
            gamma = torch.where(self.used[:, slot], self.gamma[:, slot], gamma)
        r = gamma.unsqueeze(-1) * q
        for slot, a in zip(reversed(order), reversed(alpha)):
            beta = self.rho[:, slot] * (self.y[:, slot] * r).sum(-1)
            r = r + (a - beta).unsqueeze(-1) * self.s[:, slot]
        return r
