"""Multinomial logistic regression with an L2 penalty, for S seeds × G penalty strengths at once.

For seed s and strength λ_{s,g} > 0, on the real rows i (mask) of the features x_s with labels y:

    minimise_{W [D, C], b [C]}  (1/n) Σ_i CE(x_{s,i} W + b, y_i) + (λ_{s,g} / 2) ‖W − W0‖²

n = number of real rows; b is not penalised. This is scikit-learn's LogisticRegression(penalty="l2",
multinomial, fit_intercept=True) with λ = 1/(C·n): its objective C Σ_i CE_i + ½‖W‖² divided by C·n
(scikit-learn's lbfgs path minimises exactly this scaled form). W0 = 0 is the classical probe; W0 = τ T̄ᵀ
anchors it at zero-shot CLIP (CLAP-like).

The S·G problems are independent and solved by bridge.lbfgs.minimize from W = W0, b = 0; since every
gradient with respect to b sums to zero over the classes, b keeps Σ_c b_c = 0 (the objective is flat along
b + const, and this is the representative found, as scikit-learn's solver finds it from its zero start).

Convergence: max |∇| ≤ tol for the SUMMED objective Σ_i CE_i + (nλ/2)‖W − W0‖² (= n × the mean form
above), i.e. max |∇ mean form| ≤ tol/n. That is how scikit-learn applied `tol` (its L-BFGS `gtol`) in the
versions of CoOp's time, whose lbfgs path minimised the unscaled sum C Σ CE + ½‖W‖² ∝ the summed objective
(so the test is the same up to the factor C); scikit-learn 1.9 minimises the mean form and applies tol to
it, a test n times looser that leaves weakly regularised fits far from their optimum. The other stops
(no representable decrease, failed line search, max_iter) are bridge.lbfgs's.

Memory: L-BFGS keeps 2·history vectors of D·C + C per problem; seeds are solved in chunks (exactly the
same results, the problems being independent) so that these stay under HISTORY_ELEMENTS numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from clipbridge.bridge.lbfgs import minimize

HISTORY_ELEMENTS = 1 << 28          # 1 GiB of float32 L-BFGS history per chunk of seeds


@dataclass
class LogisticFit:
    """weight [S, G, D, C], bias [S, G, C] (logits x W + b), iterations [S, G] int64 and status [S, G] int64
    (bridge.lbfgs status codes) of each problem."""

    weight: Tensor
    bias: Tensor
    iterations: Tensor
    status: Tensor


def fit_logistic(x: Tensor, labels: Tensor, mask: Tensor, l2: Tensor, w0: Tensor, *, max_iter: int = 1000,
                 tol: float = 1e-4, history: int = 10) -> LogisticFit:
    """Solve the S·G problems of the module docstring to convergence (see bridge.lbfgs for the tests).

    x [S, N, D] features (rows where mask is False are ignored, they should be zeros), labels [N] int64,
    mask [N] bool, l2 [S, G] penalty strengths λ (> 0), w0 [D, C] anchor of the penalty.
    tol bounds max |gradient| of the summed objective (see the module docstring); max_iter caps the L-BFGS
    iterations of each problem, history is the number of (s, y) pairs it keeps.
    """
    s, n, d = x.shape
    c, g = w0.shape[-1], l2.shape[-1]
    chunk = max(1, HISTORY_ELEMENTS // (2 * history * g * (d * c + c)))
    if s > chunk:
        parts = [fit_logistic(x[i:i + chunk], labels, mask, l2[i:i + chunk], w0, max_iter=max_iter, tol=tol,
                              history=history) for i in range(0, s, chunk)]
        return LogisticFit(*(torch.cat([getattr(p, f) for p in parts]) for f in ("weight", "bias", "iterations",
                                                                                   "status")))
    weight = mask.to(x.dtype) / mask.sum().to(x.dtype)                                   # [N]
    target = torch.nn.functional.one_hot(labels, c).to(x.dtype) * weight.unsqueeze(-1)   # [N, C]
    lam = l2.to(x.dtype).reshape(-1)                                                     # [S·G]
    seed_of = torch.arange(s, device=x.device).repeat_interleave(g)                      # [S·G]
    w0 = w0.to(x.dtype)

    def objective(theta: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """theta [P', D·C + C] = (W, b) flattened; rows [P'] problem indices, ascending -> value [P'],
        gradient [P', D·C + C]. The problems of one seed share one product with its features."""
        seeds, counts = torch.unique_consecutive(seed_of[rows], return_counts=True)
        values, grads = [], []
        for seed, part, th in zip(seeds.tolist(), rows.split(counts.tolist()), theta.split(counts.tolist())):
            k = part.numel()
            w = th[:, :d * c].reshape(k, d, c)
            logits = (x[seed] @ w.transpose(0, 1).reshape(d, k * c)).reshape(n, k, c) + th[:, d * c:]
            logp = torch.log_softmax(logits, dim=-1)                                     # [N, k, C]
            shift = w - w0
            penalty = lam[part]
            values.append(-(logp * target.unsqueeze(1)).sum((0, 2)) + 0.5 * penalty * shift.square().sum((1, 2)))
            err = logp.exp() * weight[:, None, None] - target.unsqueeze(1)                 # [N, k, C]
            grad_w = (x[seed].T @ err.reshape(n, k * c)).reshape(d, k, c).transpose(0, 1)
            grad_w = grad_w + penalty[:, None, None] * shift
            grads.append(torch.cat([grad_w.reshape(k, d * c), err.sum(0)], dim=1))
        return torch.cat(values), torch.cat(grads)

    start = torch.cat([w0.reshape(1, d * c), w0.new_zeros(1, c)], dim=1).expand(s * g, -1)
    result = minimize(objective, start, max_iter=max_iter, tol=tol / float(mask.sum()), history=history)
    return LogisticFit(weight=result.x[:, :d * c].reshape(s, g, d, c), bias=result.x[:, d * c:].reshape(s, g, c),
                       iterations=result.iterations.reshape(s, g), status=result.status.reshape(s, g))
