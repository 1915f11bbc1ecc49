"""Validation search of fusion weights (Tip-Adapter's α, β; GDA's α; CMM's α; APE's β, α, γ): the one generic
batched search of bridge.search, or an official grid alone; plus the scorers and grids these searches use.

Two search modes (the hyper-parameter `search` of Tip-Adapter(-F), APE(-T) and GDA; records name it):
    "batched"  bridge.search.batched_search: a grid plus Sobol points, then refinement rounds; accuracy ties
               go to the larger mean true-class log-probability (the uniform recipe's default)
    "grid"     the official grid only, in the official loop's order: the first candidate with the highest
               validation top-1 accuracy wins (`first_best`; the paper recipe)

A scorer maps candidates [S, M, p] to (validation accuracy [S, M], mean log-probability of the true class
[S, M]); the search ranks by accuracy and breaks its many ties (accuracy is a step function) by the smooth
second score. All M candidates are scored in batched tensor operations, sliced along M only when the
[S, m, Nv, C] intermediate would exceed bridge.features.CHUNK_ELEMENTS.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.features import chunked
from clipbridge.bridge.ops import accuracy
from clipbridge.bridge.search import batched_search

Scorer = Callable[[Tensor], "tuple[Tensor, Tensor]"]
SEARCH_MODES = ("batched", "grid")


@dataclass
class FusionChoice:
    """best [S, p] chosen weights, val_accuracy [S] percent, evaluated candidates, seconds spent, and
    scored_share: the share of (query, class) pairs scored per candidate (bridge.cache_search; 1.0 when the
    search scored every pair)."""

    best: Tensor
    val_accuracy: Tensor
    evaluated: int
    seconds: float
    scored_share: float = 1.0

    def fit_info(self, start: float, **extra) -> dict:
        """FittedState.info of a fit begun at `start` (time.perf_counter) whose last step was this search:
        val_accuracy, fit_seconds, search_seconds, search_evaluated, search_scored_share, then `extra`."""
        return {"val_accuracy": self.val_accuracy.tolist(), "fit_seconds": time.perf_counter() - start,
                "search_seconds": self.seconds, "search_evaluated": self.evaluated,
                "search_scored_share": self.scored_share, **extra}


def validation_scores(logits: Tensor, labels: Tensor) -> Tensor:
    """[2, S, M]: top-1 accuracy (percent) and mean log-probability of the true class of logits
    [S, M, Nv, C] against labels [S, Nv] (-1 rows ignored)."""
    labels = labels.unsqueeze(1).expand(logits.shape[:-1])
    valid = labels >= 0
    logp = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    mean_logp = (logp * valid).sum(-1) / valid.sum(-1).clamp_min(1)
    return torch.stack([accuracy(logits, labels), mean_logp])


def scorer(candidate_logits: Callable[[Tensor], Tensor], labels: Tensor, elements_per_candidate: int) -> Scorer:
    """Scorer from candidate_logits(candidates [S, m, p]) -> [S, m, Nv, C], chunked along m."""

    def score(candidates: Tensor) -> tuple[Tensor, Tensor]:
        both = chunked(lambda part: validation_scores(candidate_logits(part), labels), candidates,
                       elements_per_candidate, dim=1, out_dim=2)
        return both[0], both[1]

    return score


def linear_fusion_scorer(base: Tensor, extra: Tensor, labels: Tensor) -> Scorer:
    """Scorer of logits = base + α·extra for candidates α [S, M, 1]; base, extra [S, Nv, C], labels [S, Nv]."""

    def logits(alpha: Tensor) -> Tensor:
        return base.unsqueeze(1) + alpha.to(base.dtype).unsqueeze(-1) * extra.unsqueeze(1)

    return scorer(logits, labels, base.numel())


def log_grid(low: float, high: float, points: int, *, dtype=torch.float64, device=None) -> Tensor:
    """[points] values evenly spaced in log10 between low and high (inclusive)."""
    if not 0 < low <= high or points < 1:
        raise BridgeInputError(f"log grid needs 0 < low <= high and points >= 1, got {low}, {high}, {points}")
    return torch.logspace(math.log10(low), math.log10(high), points, dtype=dtype, device=device)


def grid_axis(low: float, high: float, points: int, *, endpoint: bool = True) -> list[float]:
    """`points` values from low to high: endpoint=True evenly spaced with both ends (torch.linspace);
    endpoint=False low + i·(high − low)/points for i < points, computed as the official Tip-Adapter / APE loops
    compute them in Python floats (i·(high − low)/points + low), so the values agree bit for bit."""
    if endpoint:
        return torch.linspace(low, high, int(points), dtype=torch.float64).tolist()
    return [i * (high - low) / int(points) + low for i in range(int(points))]


def box_grid(low: list[float], high: list[float], points: list[int], *, endpoint: bool = True, dtype=torch.float64,
             device=None) -> Tensor:
    """[∏points, p] Cartesian grid, first coordinate slowest (the official loops' order: the first coordinate is
    the outer loop); per coordinate the values of grid_axis(low, high, points, endpoint=endpoint)."""
    axes = [torch.tensor(grid_axis(lo, hi, n, endpoint=endpoint), dtype=torch.float64)
            for lo, hi, n in zip(low, high, points)]
    return torch.cartesian_prod(*axes).reshape(-1, len(axes)).to(dtype=dtype, device=device)


def first_best(accuracy: Tensor, grid: Tensor, start: float, scored_share: float = 1.0) -> FusionChoice:
    """The official grid rule: per seed, the first grid point (in grid order) whose validation accuracy is the
    highest, as a loop keeping a candidate only when it is strictly better than the best so far (torch.argmax
    returns the first maximum). accuracy [S, G] percent, grid [G, p] -> FusionChoice(best [S, p]). When every
    candidate scores 0 % the first grid point is kept (the official loops keep their initial values then)."""
    first = accuracy.argmax(-1)
    return FusionChoice(best=grid[first.to(grid.device)], val_accuracy=accuracy.gather(1, first[:, None]).squeeze(1),
                        evaluated=int(grid.shape[0]), seconds=time.perf_counter() - start, scored_share=scored_share)


def search_fusion(score: Scorer, low: list[float], high: list[float], *, seeds: tuple[int, ...],
                  rounds: int, per_round: int, grid: Tensor | None = None,
                  log_scale: list[bool] | None = None, like: Tensor) -> FusionChoice:
    """bridge.search.batched_search over the box [low, high] (and `grid` first when given), timed; one
    problem per seed, each with its own random stream (so a seed's choice never depends on the batch).

    like: a tensor whose device/dtype the candidates take.
    """
    start = time.perf_counter()
    lo = torch.tensor(low, dtype=like.dtype, device=like.device)
    hi = torch.tensor(high, dtype=like.dtype, device=like.device)
    result = batched_search(score, lo, hi, num_seeds=len(seeds), rounds=rounds, per_round=per_round,
                            seed=[int(x) for x in seeds],
                            log_scale=log_scale,
                            grid=None if grid is None else grid.to(device=like.device, dtype=like.dtype))
    share = getattr(score, "scored_share", None)
    return FusionChoice(best=result.best, val_accuracy=result.best_score, evaluated=int(result.evaluated),
                        seconds=time.perf_counter() - start, scored_share=1.0 if share is None else float(share))
