"""Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks", §4.2): one scalar T per
seed, fitted by minimising the negative log-likelihood of softmax(logits / T) on labelled validation logits;
calibrated probabilities are softmax(logits / T). T does not change the argmax, so accuracy is untouched.

Few-shot validation sets are small (CoOp's min(K, 4) images per class), and the plain maximum-likelihood T is
then biased towards overconfidence: a set the logits happen to separate perfectly sends it to 0. As Platt
(1999, "Probabilistic Outputs for Support Vector Machines", §2.2) does for his sigmoid, the NLL is taken
against smoothed targets: with n labelled queries, 1 − ε on the true class and ε / (C − 1) on each other one,
ε = 1 / (n + 2) (Platt's binary targets (n₊ + 1) / (n₊ + 2), spread over C classes). The effect vanishes as n
grows; on the demo's and flowers17's caches it never raised the test ECE or NLL against the plain MLE and
lowered both at 1-2 shots (FIGURES.md).

    temperature = fit_temperature(val_logits, val_labels)          # [S]
    probabilities = calibrated_probabilities(logits, temperature)   # [S, N, C]

The objective is convex in the inverse temperature b = 1/T (a log-sum-exp of b·z minus the linear b·Σ_c t_c z_c
for targets t), so its derivative g(b) = mean_i(Σ_c softmax(b·z_i)_c z_ic − Σ_c t_ic z_ic) increases with b, and
g'(b) = mean_i Var_{softmax(b·z_i)}(z_i) ≥ 0. The minimum is found per seed by safeguarded Newton steps on g
inside a bracket that every evaluation narrows (the bracket's geometric middle where a Newton step would
leave it, as plain bisection in log b would take): deterministic, no step size, a handful of passes over the
logits instead of one per halving. The targets' term Σ_c t_ic z_ic does not depend on b; it is computed once
from the labels, without a dense [S, N, C] target tensor.

Methods' logits live on very different scales (CLIP's 100·cosine; SeMoBridge's blended scores spread over
1e-4), so the search runs on logits divided by their spread s (the standard deviation, over the labelled
queries and classes, of each query's logits minus their mean) and returns T in the logits' own units:
T = s · T', with T' kept in [MIN_TEMPERATURE, MAX_TEMPERATURE] (reached only without smoothing, by a
validation set the logits separate perfectly).
"""
from __future__ import annotations

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError

#: bounds of T' = T / s, the temperature of spread-normalised logits (s: their standard deviation)
MIN_TEMPERATURE = 1e-2
MAX_TEMPERATURE = 1e2
#: a seed's search stops after a Newton step this small (relative to b; the step is still taken: Newton's
#: error is then about its square), or when its bracket of b is this narrow (relative), or after NEWTON_STEPS
STEP_TOLERANCE = 1e-9
BRACKET_TOLERANCE = 1e-13
NEWTON_STEPS = 100
# elements of the [S, rows, C] logit slices each pass of nll_slope works on (float64, 512 KB: they stay in the CPU's
# cache; 6.7x faster than whole [3, 50,000, 1,000] tensors, FIGURES.md "Scale (issue 21)"), the same values per row
SLOPE_ELEMENTS = 1 << 16


def _labelled(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """logits [S, N, C] float64, labels [S, N] (-1 = padding, broadcast from [1, N]) clamped, mask [S, N]."""
    if logits.dim() != 3:
        raise BridgeInputError(f"logits must be [S, N, C], got shape {tuple(logits.shape)}")
    labels = labels.to(logits.device).long().expand(logits.shape[0], -1)
    if labels.shape != logits.shape[:2]:
        raise BridgeInputError(f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)}")
    mask = labels >= 0
    if not mask.any(dim=1).all():
        raise BridgeInputError("a seed has no labelled validation query to fit the temperature on")
    return logits.double(), labels.clamp_min(0), mask


def target_dot(logits: Tensor, labels: Tensor, smoothing: bool = True) -> Tensor:
    """[S, N] Σ_c t_c z_c of each query for Platt's smoothed targets t (module docstring; 0 for padding),
    without building them: (1 − ε) z_y + ε / (C − 1) (Σ_c z_c − z_y), ε = 1 / (n + 2) for a seed's n labelled
    queries; z_y without smoothing (one-hot targets). logits [S, N, C], labels [S, N] (-1 = padding)."""
    mask = labels >= 0
    z = logits.double()
    at_y = z.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    if smoothing:
        eps = (1.0 / (mask.sum(1).double() + 2)).unsqueeze(1)
        at_y = at_y * (1 - eps) + (z.sum(-1) - at_y) * eps / max(z.shape[-1] - 1, 1)
    return at_y * mask


def nll_slope(logits: Tensor, target_terms: Tensor, mask: Tensor, inverse_temperature: Tensor,
              curvature: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """d/db of the mean cross-entropy of softmax(b·logits) against the targets at b = inverse_temperature [S]:
    logits [S, N, C] float64, target_terms [S, N] (target_dot), mask [S, N] (False = padding) -> [S]; with
    `curvature` also the second derivative [S] (the mean variance of the logits under the softmax)."""
    weight = mask.double()
    s, n, c = logits.shape
    rows = n if logits.device.type != "cpu" else max(1, SLOPE_ELEMENTS // max(1, s * c))
    mean = torch.empty(s, n, dtype=torch.float64, device=logits.device)                 # [S, N]
    second = torch.empty_like(mean) if curvature else None
    scale = inverse_temperature.double()[:, None, None]
    for r0 in range(0, n, rows):          # per row the same operations as on the whole: the same values
        z = logits[:, r0:r0 + rows]
        p = torch.softmax(scale * z, dim=-1)
        mean[:, r0:r0 + rows] = (p * z).sum(-1)
        if curvature:
            second[:, r0:r0 + rows] = (p * z.square()).sum(-1)
    count = weight.sum(1)
    slope = ((mean - target_terms) * weight).sum(1) / count
    if not curvature:
        return slope
    variance = second - mean.square()
    return slope, (variance.clamp_min(0) * weight).sum(1) / count


def logit_spread(logits: Tensor, labels: Tensor) -> Tensor:
    """[S] float64 s: the standard deviation of the labelled queries' logits after subtracting each query's
    mean over classes (1 where that is 0: all logits equal)."""
    z, _, mask = _labelled(logits, labels)
    centred = z - z.mean(-1, keepdim=True)
    weight = mask[..., None].double().expand_as(centred)
    spread = ((centred ** 2 * weight).sum((1, 2)) / weight.sum((1, 2))).sqrt()
    return torch.where(spread > 0, spread, torch.ones_like(spread))


def fit_temperature(logits: Tensor, labels: Tensor, smoothing: bool = True) -> Tensor:
    """[S] float64 temperatures minimising the validation NLL of softmax(logits / T) against Platt's smoothed
    targets (`smoothing` False: the one-hot labels, the plain MLE), per seed.

    logits [S, N, C] (any real scores), labels [S, N] or [1, N] int (-1 = padding)."""
    spread = logit_spread(logits, labels)
    scaled = logits.double() / spread[:, None, None]
    labels = labels.to(logits.device).long().expand(logits.shape[0], -1)
    terms, mask = target_dot(scaled, labels, smoothing), labels >= 0
    low = torch.full((logits.shape[0],), 1.0 / MAX_TEMPERATURE, dtype=torch.float64, device=logits.device)
    high = torch.full_like(low, 1.0 / MIN_TEMPERATURE)
    # the minimum at or beyond a bound of T': the bound itself (the derivative's sign there says so)
    at_low, at_high = (nll_slope(scaled, terms, mask, bound) for bound in (low, high))
    done = (at_low >= 0) | (at_high <= 0)
    b = torch.where(at_low >= 0, low, torch.where(at_high <= 0, high, torch.ones_like(low)))   # else T' = 1
    previous_step = high - low
    for _ in range(NEWTON_STEPS):
        if bool(done.all()):
            break
        slope, curve = nll_slope(scaled, terms, mask, b, curvature=True)
        rising = slope > 0                                                     # past the minimum: go left
        high = torch.where(rising, b, high)
        low = torch.where(rising, low, b)
        newton = b - slope / curve.clamp_min(torch.finfo(torch.float64).tiny)
        # Newton's step where it stays in the bracket and at least halves the step before it, else the
        # bracket's geometric middle (bisection in log b)
        fast = (newton > low) & (newton < high) & (2 * (newton - b).abs() <= previous_step)
        step = torch.where(fast, newton, (low * high).sqrt())
        converged = ((newton - b).abs() <= STEP_TOLERANCE * b) | ((high - low) <= BRACKET_TOLERANCE * high)
        step = torch.where(converged & ~fast, b, step)             # converged: Newton's last step, or none
        previous_step = torch.where(done, previous_step, (step - b).abs())
        b = torch.where(done, b, step)
        done = done | converged
    return spread / b


def calibrated_probabilities(logits: Tensor, temperature: Tensor | float) -> Tensor:
    """softmax(logits / T) in float64: logits [S, N, C] with temperature [S], or [N, C] with a float."""
    logits = logits.double()
    if isinstance(temperature, Tensor) and temperature.dim() == 1:
        temperature = temperature.to(logits.device, torch.float64)[:, None, None]
    return torch.softmax(logits / temperature, dim=-1)
