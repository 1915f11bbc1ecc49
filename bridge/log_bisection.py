"""CoOp's linear-probe search of a positive hyper-parameter (lpclip, RECIPES.md §2.6): a grid, then a
bisection in log space, per seed, scored on validation accuracy alone.

    choice = grid_then_bisect(fit_score, grid=[1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6], steps=8, num_seeds=S)

`fit_score(values [S, M] float64) -> (accuracy [S, M], fitted)` fits one model per seed and value and scores
it on validation; `fitted` is a tuple of tensors [S, M, ...] (the fitted parameters) that the search carries
along so the chosen model is returned without a refit.

Rule (KaiyangZhou/CoOp lpclip/linear_probe.py):
  1. score every grid value; the peak v* is the first maximum in grid order (numpy's argmax);
  2. interval [0.1·v*, 10·v*]; each of `steps` steps scores both ends and keeps the better one, the left
     (smaller) end on a tie; the next interval is [m, right] when the right end won, [left, m] otherwise,
     m = 10^((log10 left + log10 right)/2);
  3. the chosen value is the winner of the last step (v* itself when steps = 0).
The end kept from the previous step is not refitted (its fit and score are reused; CoOp refits it at
10^log10(v), the same value up to one rounding), so each step after the first fits one new value per seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError

FitScore = Callable[[Tensor], "tuple[Tensor, tuple[Tensor, ...]]"]


@dataclass
class BisectionChoice:
    """value [S] chosen, accuracy [S] its validation accuracy, fitted its tensors (each [S, ...]);
    grid_accuracy [S, G]; ends [S, steps, 2] the (left, right) interval scored at each step and
    end_accuracy [S, steps, 2] their accuracies."""

    value: Tensor
    accuracy: Tensor
    fitted: tuple[Tensor, ...]
    grid_accuracy: Tensor
    ends: Tensor
    end_accuracy: Tensor


def _pick(take_right: Tensor, right: Tensor, left: Tensor) -> Tensor:
    """Per seed: right where take_right [S] else left (tensors [S, ...])."""
    return torch.where(take_right.reshape(-1, *([1] * (right.ndim - 1))), right, left)


def grid_then_bisect(fit_score: FitScore, grid: Sequence[float], steps: int, num_seeds: int,
                     device: torch.device | str | None = None) -> BisectionChoice:
    """Run the rule of the module docstring for `num_seeds` independent seeds side by side."""
    if not grid or any(not float(v) > 0 for v in grid) or steps < 0:
        raise BridgeInputError(f"the grid-then-bisection search needs a non-empty grid of positive values and "
                               f"steps >= 0, got {list(grid)} and {steps}")
    values = torch.tensor([float(v) for v in grid], dtype=torch.float64, device=device).expand(num_seeds, -1)
    grid_acc, grid_fit = fit_score(values)
    peak = grid_acc.argmax(-1)                                                    # first maximum
    rows = torch.arange(num_seeds, device=peak.device)
    best = values[rows, peak]
    if steps == 0:
        return BisectionChoice(best, grid_acc[rows, peak], tuple(f[rows, peak] for f in grid_fit), grid_acc,
                               values.new_zeros(num_seeds, 0, 2), grid_acc.new_zeros(num_seeds, 0, 2))
    left, right = 0.1 * best, 10.0 * best
    acc, fitted = fit_score(torch.stack([left, right], dim=1))
    acc_left, acc_right = acc[:, 0], acc[:, 1]
    fit_left, fit_right = tuple(f[:, 0] for f in fitted), tuple(f[:, 1] for f in fitted)
    ends, end_acc = [], []
    for step in range(steps):
        ends.append(torch.stack([left, right], 1))
        end_acc.append(torch.stack([acc_left, acc_right], 1))
        right_wins = acc_left < acc_right                                         # tie -> left
        if step == steps - 1:
            break
        middle = 10.0 ** (0.5 * (torch.log10(left) + torch.log10(right)))
        acc_mid, fit_mid = fit_score(middle.unsqueeze(1))
        acc_mid, fit_mid = acc_mid[:, 0], tuple(f[:, 0] for f in fit_mid)
        left, right = _pick(right_wins, middle, left), _pick(right_wins, right, middle)
        acc_left, acc_right = _pick(right_wins, acc_mid, acc_left), _pick(right_wins, acc_right, acc_mid)
        fit_left = tuple(_pick(right_wins, m, f) for m, f in zip(fit_mid, fit_left))
        fit_right = tuple(_pick(right_wins, f, m) for m, f in zip(fit_mid, fit_right))
    return BisectionChoice(_pick(right_wins, right, left), _pick(right_wins, acc_right, acc_left),
                           tuple(_pick(right_wins, r, f) for r, f in zip(fit_right, fit_left)), grid_acc,
                           torch.stack(ends, 1), torch.stack(end_acc, 1))
