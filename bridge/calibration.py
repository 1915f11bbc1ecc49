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
for targets t), so its derivative mean_i(Σ_c (softmax(b·z_i)_c − t_ic) z_ic) increases with b and the minimum is
found by bisection on the sign of that derivative, in log b, per seed: deterministic, no step size.

Methods' logits live on very different scales (CLIP's 100·cosine; SeMoBridge's blended scores spread over
1e-4), so the search runs on logits divided by their spread s (the standard deviation, over the labelled
queries and classes, of each query's logits minus their mean) and returns T in the logits' own units:
T = s · T', with T' kept in [MIN_TEMPERATURE, MAX_TEMPERATURE] (reached only without smoothing, by a
validation set the logits separate perfectly).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError

#: bounds of T' = T / s, the temperature of spread-normalised logits (s: their standard deviation)
MIN_TEMPERATURE = 1e-2
MAX_TEMPERATURE = 1e2
BISECTION_STEPS = 64


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


def smoothed_targets(labels: Tensor, num_classes: int, smoothing: bool = True) -> Tensor:
    """[S, N, C] float64 targets of labels [S, N] (-1 = padding, rows of zeros): one-hot, or with `smoothing`
    Platt's 1 − ε on the true class and ε / (C − 1) elsewhere, ε = 1 / (n + 2) for a seed's n labelled queries."""
    mask = labels >= 0
    onehot = torch.nn.functional.one_hot(labels.clamp_min(0), num_classes).double() * mask[..., None]
    if not smoothing:
        return onehot
    eps = (1.0 / (mask.sum(1).double() + 2))[:, None, None]
    return (onehot * (1 - eps) + (1 - onehot) * eps / max(num_classes - 1, 1)) * mask[..., None]


def nll_slope(logits: Tensor, targets: Tensor, inverse_temperature: Tensor) -> Tensor:
    """d/db of the mean cross-entropy of softmax(b·logits) against targets at b = inverse_temperature [S]:
    logits [S, N, C], targets [S, N, C] (rows of zeros = padding, ignored) -> [S]."""
    z = logits.double()
    weight = targets.sum(-1)                                                       # [S, N]: 1, or 0 for padding
    p = torch.softmax(inverse_temperature.double()[:, None, None] * z, dim=-1)
    per_query = weight * (p * z).sum(-1) - (targets * z).sum(-1)                  # [S, N]
    return per_query.sum(1) / weight.sum(1)


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
    targets = smoothed_targets(labels.to(logits.device).long().expand(logits.shape[0], -1), logits.shape[-1],
                               smoothing)
    low = torch.full((logits.shape[0],), math.log(1.0 / MAX_TEMPERATURE), dtype=torch.float64,
                     device=logits.device)
    high = torch.full_like(low, math.log(1.0 / MIN_TEMPERATURE))
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        rising = nll_slope(scaled, targets, middle.exp()) > 0                  # past the minimum: go left
        high = torch.where(rising, middle, high)
        low = torch.where(rising, low, middle)
    return spread * (-(low + high) / 2).exp()


def calibrated_probabilities(logits: Tensor, temperature: Tensor | float) -> Tensor:
    """softmax(logits / T) in float64: logits [S, N, C] with temperature [S], or [N, C] with a float."""
    logits = logits.double()
    if isinstance(temperature, Tensor) and temperature.dim() == 1:
        temperature = temperature.to(logits.device, torch.float64)[:, None, None]
    return torch.softmax(logits / temperature, dim=-1)
