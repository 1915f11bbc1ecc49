"""Split conformal prediction sets (Vovk et al., 2005; Angelopoulos & Bates, "A Gentle Introduction to
Conformal Prediction", 2021, §1-2): with n labelled calibration queries exchangeable with the test queries,
the set {c : s(x, c) <= q} where q is the ceil((n + 1)(1 − α))-th smallest calibration score s(x_i, y_i)
contains the true class with probability at least 1 − α (marginally, over calibration and test draws).

Scores (probabilities p [N, C] of one seed, rows summing to 1); the higher, the less the class conforms:
- "lac" (least ambiguous set-valued classifier; Sadinle, Lei & Wasserman, 2019): s(x, c) = 1 − p_c. Gives
  the smallest sets on average.
- "aps" (adaptive prediction sets; Romano, Sesia & Candès, 2020), without the random tie-break: s(x, c) =
  Σ_{j : p_j >= p_c} p_j, the probability mass of the classes ranked at or above c. Sets grow on hard images.

Classwise (Mondrian) conformal (Vovk, 2012; the Gentle Introduction §4.1) computes q per class from that
class's calibration scores, so each class is covered at 1 − α, at the price of needing
`minimum_calibration_size(α)` calibration queries in every class.

    q = conformal_threshold(calibration_scores, alpha)              # or classwise_thresholds(...) [C]
    sets = class_scores(p_test, "lac") <= q                         # [N, C] bool
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError

SCORES = ("lac", "aps")
MODES = ("marginal", "classwise")


def quantile_rank(n: int, alpha: float) -> int:
    """ceil((n + 1)(1 − α)): the rank (1-based, ascending) of the calibration score used as the threshold.
    The small epsilon keeps an exact integer (e.g. n = 9, α = 0.1 -> 9) from rounding up through float error."""
    return math.ceil((n + 1) * (1 - alpha) - 1e-9)


def minimum_calibration_size(alpha: float) -> int:
    """The fewest calibration queries for which quantile_rank(n, α) <= n, i.e. n >= 1/α − 1 (e.g. 9 for
    α = 0.1); with fewer, only the set of every class has the guarantee."""
    return max(1, math.ceil((1 - alpha) / alpha - 1e-9))


def check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise BridgeInputError(f"the miscoverage α must be in (0, 1), got {alpha} (coverage {1 - alpha})")


def conformal_threshold(scores: Tensor, alpha: float) -> float:
    """q: the quantile_rank(n, α)-th smallest of the calibration scores [n] (a BridgeInputError when
    n < minimum_calibration_size(α))."""
    check_alpha(alpha)
    n = int(scores.numel())
    rank = quantile_rank(n, alpha)
    if n == 0 or rank > n:
        raise BridgeInputError(f"{n} calibration image(s) cannot guarantee coverage {1 - alpha:g}: it takes at "
                               f"least {minimum_calibration_size(alpha)}")
    return float(scores.reshape(-1).double().sort().values[rank - 1])


def classwise_thresholds(scores: Tensor, labels: Tensor, num_classes: int, alpha: float,
                         classnames: list[str] | None = None) -> Tensor:
    """[C] float64: conformal_threshold of each class's calibration scores (scores [n], labels [n])."""
    thresholds = []
    for c in range(num_classes):
        mine = scores[labels == c]
        if mine.numel() < minimum_calibration_size(alpha):
            name = classnames[c] if classnames else str(c)
            raise BridgeInputError(f"class {name!r} has {mine.numel()} calibration image(s); classwise coverage "
                                   f"{1 - alpha:g} takes at least {minimum_calibration_size(alpha)} per class")
        thresholds.append(conformal_threshold(mine, alpha))
    return torch.tensor(thresholds, dtype=torch.float64)


def class_scores(probabilities: Tensor, score: str) -> Tensor:
    """[N, C] nonconformity score of every class of every query (probabilities [N, C])."""
    p = probabilities.double()
    if score == "lac":
        return 1 - p
    if score == "aps":
        # mass of the classes at or above each class: Σ_j p_j [p_j >= p_c]
        ordered, order = p.sort(dim=-1, descending=True)
        cumulative = ordered.cumsum(-1)
        # ties share the mass of the whole tied block: take the last position of each class's value
        last = torch.searchsorted(-ordered.contiguous(), -ordered.contiguous(), right=True) - 1
        at_rank = cumulative.gather(-1, last)
        return torch.empty_like(p).scatter_(-1, order, at_rank)
    raise BridgeInputError(f"unknown conformal score {score!r}; use one of {', '.join(SCORES)}")


def true_class_scores(probabilities: Tensor, labels: Tensor, score: str) -> Tensor:
    """[N] the score of each query's true class (probabilities [N, C], labels [N])."""
    return class_scores(probabilities, score).gather(-1, labels.long()[:, None].to(probabilities.device))[:, 0]


def prediction_sets(probabilities: Tensor, threshold: float | Tensor, score: str) -> Tensor:
    """[N, C] bool: class c is in query n's set when its score <= the threshold (a float, or [C] per class)."""
    limit = threshold if isinstance(threshold, float) else threshold.to(probabilities.device)[None, :]
    return class_scores(probabilities, score) <= limit
