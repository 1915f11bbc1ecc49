"""Batched, deterministic box search: every candidate of a round is scored in ONE call.

Used for SeMoBridge's 7-parameter blend and for the α/β-type hyper-parameters of the baselines.

    result = batched_search(score, low, high, num_seeds=S, rounds=R, per_round=M, seed=seed)

`score(candidates [S, M, p]) -> [S, M]` returns the validation accuracy of each candidate of each seed
(seeds are searched independently, side by side). It may instead return a pair `(accuracy, secondary)`,
both [S, M]: candidates are then ranked lexicographically, accuracy first, the secondary score breaking
ties (validation accuracy is a step function; a smooth secondary such as the mean log-probability of the
true class picks, among equally accurate candidates, the one with the widest margins). Remaining ties keep
the candidate evaluated first (grid points, then earlier rounds, then lower index).

`score` may also be a LazyScore, an object with primary(candidates) and secondary(candidates), both
[S, M] from [S, M, p]: the secondary is then asked only for the candidates whose order it can change (those
in the top `elites` of their round's merge that share their primary score with another of them), so a
costly secondary is scored for a few candidates instead of all; the result is the same as scoring it for all.
A LazyScore may also offer bounded_primary(candidates, keep, elites): the primary, exact wherever a candidate
can be among the best `keep` of `elites` [S, E] (the primaries of the elites kept so far) and these candidates,
any value below the keep-th best of them elsewhere. Such a candidate can neither enter the elites nor tie
with them, so the result is again the same; the search then asks for it with keep = `elites`.

Algorithm (all in the unit cube; a parameter with log_scale=True is searched uniformly in log space):
  round 0      the caller's `grid` points (same for every seed) plus `per_round` scrambled-Sobol points;
  round r ≥ 1  `per_round` new points per seed, drawn around the current elites inside a box whose
               half-width shrinks geometrically from 0.5 to `final_radius` over the rounds:
                 1/2 around the best point (uniform in the box),
                 1/4 around the other elites (the top `elites` points seen so far),
                 1/8 coordinate moves (the best point with one coordinate redrawn in a twice wider box),
                 1/8 uniform over the whole cube (keeps exploring).
               Points are clamped to the cube, so bounds (often optimal, e.g. λ = 0) are reachable.
Only the best point of the last round's merge is returned, so that merge keeps one elite: a LazyScore's
secondary and bounded primary are then asked only for what can change the best (its first maximum by
(primary, secondary, evaluation order) is the same as in a merge keeping `elites`).
Randomness comes from one torch.Generator and one SobolEngine per problem, seeded with `seed` (or the
problem's own seed): same inputs and seeds, same result.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError

Score = Callable[[Tensor], "Tensor | tuple[Tensor, Tensor]"]


@runtime_checkable
class LazyScore(Protocol):
    """A score whose secondary is computed only where it can change the search (module docstring)."""

    def primary(self, candidates: Tensor) -> Tensor: ...

    def secondary(self, candidates: Tensor) -> Tensor:
        """[S, M]; a seed whose candidates are all NaN is not needed (any value)."""


class SearchResult(NamedTuple):
    """best [S, p] parameters, best_score [S] their accuracy, evaluated = candidates scored per seed."""

    best: Tensor
    best_score: Tensor
    evaluated: int


def batched_search(score: Score, low: Tensor, high: Tensor, *, num_seeds: int, rounds: int, per_round: int,
                   seed: int | Sequence[int], log_scale: list[bool] | None = None, grid: Tensor | None = None,
                   elites: int = 8, final_radius: float = 0.02) -> SearchResult:
    """Maximise `score` over the box [low, high] (both [p]) for `num_seeds` independent problems.

    grid  [G, p] points in parameter space scored in round 0 before the random ones (optional).
    seed  one int for all problems, or one per problem (then problem i's result does not depend on which
          other problems are searched beside it).
    Returns SearchResult(best [S, p], best_score [S], evaluated = G + rounds·per_round); per_round 0 scores
    the grid alone (rounds are then ignored).
    """
    low, high = torch.as_tensor(low), torch.as_tensor(high)
    p = low.shape[-1]
    _check(low, high, num_seeds, rounds, per_round, log_scale, grid, p)
    box = _Box(low, high, log_scale)
    s = num_seeds
    seeds = [int(seed)] * s if isinstance(seed, int) else [int(x) for x in seed]
    if len(seeds) != s:
        raise BridgeInputError(f"search got {len(seeds)} seeds for {s} problems")
    gens = [torch.Generator().manual_seed(x) for x in seeds]
    engines = [torch.quasirandom.SobolEngine(p, scramble=True, seed=x) for x in seeds]
    first = torch.stack([eng.draw(per_round).to(torch.float64) for eng in engines]) if per_round \
        else torch.empty(s, 0, p, dtype=torch.float64)
    if grid is not None and grid.shape[0]:
        first = torch.cat([box.to_unit(grid.detach().to("cpu", torch.float64)).unsqueeze(0).expand(s, -1, -1), first], 1)
    last = max(1, rounds) - 1 if per_round else 0            # per_round 0: the grid alone
    pool = _Pool.empty(s, p, elites if last else 1)
    resolve = _resolver(score, box) if isinstance(score, LazyScore) else None
    pool = pool.merge(first, *_evaluate(score, box, first, pool), resolve=resolve)
    evaluated = first.shape[1]

    shrink = (final_radius / 0.5) ** (1.0 / max(1, rounds - 2))
    for r in range(1, last + 1):
        radius = max(final_radius, 0.5 * shrink ** (r - 1))
        cand = _propose(pool, per_round, radius, gens)
        if r == last:                                         # only the best of the last merge is returned
            pool = pool.resized(1)
        pool = pool.merge(cand, *_evaluate(score, box, cand, pool), resolve=resolve)
        evaluated += per_round
    best = box.from_unit(pool.points[:, 0]).to(dtype=low.dtype, device=low.device)
    return SearchResult(best=best, best_score=pool.primary[:, 0].to(low.device), evaluated=evaluated)


class _Box:
    """Maps the unit cube [0, 1]^p to parameter space (linear or log per dim), float64 on the CPU."""

    def __init__(self, low: Tensor, high: Tensor, log_scale: list[bool] | None):
        self.device, self.dtype = low.device, low.dtype
        self.log = torch.tensor(log_scale or [False] * low.shape[-1])
        lo, hi = low.detach().cpu().to(torch.float64), high.detach().cpu().to(torch.float64)
        self.lo = torch.where(self.log, lo.clamp_min(1e-300).log(), lo)
        self.hi = torch.where(self.log, hi.clamp_min(1e-300).log(), hi)

    def from_unit(self, u: Tensor) -> Tensor:
        x = self.lo + u * (self.hi - self.lo)
        return torch.where(self.log, x.exp(), x)

    def to_unit(self, x: Tensor) -> Tensor:
        x = torch.where(self.log, x.clamp_min(1e-300).log(), x)
        span = (self.hi - self.lo)
        return ((x - self.lo) / torch.where(span > 0, span, torch.ones_like(span))).clamp(0, 1)


class _Pool:
    """Per-seed elites sorted best first: points [S, E, p] (unit cube), primary/secondary [S, E], known [S, E]
    (False: the secondary was never needed, so it was not scored)."""

    def __init__(self, points: Tensor, primary: Tensor, secondary: Tensor, size: int, known: Tensor | None = None):
        self.points, self.primary, self.secondary, self.size = points, primary, secondary, size
        self.known = torch.ones_like(primary, dtype=torch.bool) if known is None else known

    @classmethod
    def empty(cls, s: int, p: int, size: int) -> "_Pool":
        z = torch.empty(s, 0, dtype=torch.float64)
        return cls(torch.empty(s, 0, p, dtype=torch.float64), z, z.clone(), size)

    def resized(self, size: int) -> "_Pool":
        """The same elites (all of them take part in the next merge and in proposals), keeping `size` after a merge."""
        return _Pool(self.points, self.primary, self.secondary, size, self.known)

    def merge(self, points: Tensor, primary: Tensor, secondary: Tensor | None,
              resolve: Callable[[Tensor, Tensor], Tensor] | None = None) -> "_Pool":
        """Keep the top `size` of old elites + new points; ties keep old before new, then lower index.
        secondary None: not scored yet; resolve(points [S, T, p], need [S, T]) scores it where needed."""
        pts = torch.cat([self.points, points], 1)
        a = torch.cat([self.primary, primary], 1)
        fresh = torch.zeros_like(primary) if secondary is None else secondary
        b = torch.cat([self.secondary, fresh], 1)
        known = torch.cat([self.known, torch.full_like(primary, secondary is not None, dtype=torch.bool)], 1)
        if not bool(known.all()):
            need = _needs_secondary(a, self.size) & ~known
            if bool(need.any()):
                b = torch.where(need, resolve(pts, need), b)
                known = known | need
        order = torch.sort(-b, dim=1, stable=True).indices
        order = order.gather(1, torch.sort(-a.gather(1, order), dim=1, stable=True).indices)[:, : self.size]
        pick = order.unsqueeze(-1).expand(-1, -1, pts.shape[-1])
        return _Pool(pts.gather(1, pick), a.gather(1, order), b.gather(1, order), self.size, known.gather(1, order))


def _needs_secondary(primary: Tensor, size: int) -> Tensor:
    """[S, T] entries whose secondary can change the top `size` by (primary, secondary): those at or above the
    size-th best primary that share their primary with another such entry."""
    top = primary.topk(min(size, primary.shape[1]), dim=1).values[:, -1:]
    contender = primary >= top
    same = (primary.unsqueeze(2) == primary.unsqueeze(1)) & contender.unsqueeze(1)
    return contender & (same.sum(-1) >= 2)


def _resolver(score: "LazyScore", box: "_Box") -> Callable[[Tensor, Tensor], Tensor]:
    """resolve(points [S, T, p] unit cube, need [S, T]) -> [S, T] secondary (float64, -inf for NaN) where
    needed, scoring only the needed points (padded per seed by repeating one of them)."""

    def resolve(points: Tensor, need: Tensor) -> Tensor:
        counts = need.sum(1)
        width = int(counts.max())
        order = torch.sort((~need).to(torch.int8), dim=1, stable=True).indices[:, :width]      # needed first
        slot = torch.minimum(torch.arange(width).expand_as(order), (counts - 1).clamp_min(0).unsqueeze(1))
        index = order.gather(1, slot)
        picked = points.gather(1, index.unsqueeze(-1).expand(-1, -1, points.shape[-1]))
        candidates = box.from_unit(picked)
        candidates[counts == 0] = math.nan                 # a seed with nothing needed: its LazyScore may skip it
        values = score.secondary(candidates.to(device=box.device, dtype=box.dtype))
        values = values.detach().to("cpu", torch.float64).nan_to_num(-math.inf)
        out = torch.full(need.shape, -math.inf, dtype=torch.float64)
        return out.scatter(1, index, values)

    return resolve


def _evaluate(score: Score, box: _Box, unit: Tensor, pool: "_Pool") -> tuple[Tensor, Tensor | None]:
    """Score unit-cube candidates [S, M, p]; returns (primary, secondary) [S, M] float64 on the CPU (a
    LazyScore's secondary: None, scored later where needed; its bounded_primary, when it has one, told the
    pool's elites)."""
    if isinstance(score, LazyScore):
        candidates = box.from_unit(unit).to(device=box.device, dtype=box.dtype)
        bounded = getattr(score, "bounded_primary", None)
        primary = score.primary(candidates) if bounded is None else bounded(candidates, pool.size, pool.primary)
        if tuple(primary.shape) != tuple(unit.shape[:2]):
            raise BridgeInputError(f"search score must return [{unit.shape[0]}, {unit.shape[1]}] scores, "
                                   f"got {list(primary.shape)}")
        return primary.detach().to("cpu", torch.float64).nan_to_num(-math.inf), None
    out = score(box.from_unit(unit).to(device=box.device, dtype=box.dtype))
    primary, secondary = out if isinstance(out, tuple) else (out, torch.zeros_like(out))
    if tuple(primary.shape) != tuple(unit.shape[:2]) or tuple(secondary.shape) != tuple(unit.shape[:2]):
        raise BridgeInputError(f"search score must return [{unit.shape[0]}, {unit.shape[1]}] scores, "
                               f"got {list(primary.shape)}")
    primary = primary.detach().to("cpu", torch.float64)
    secondary = secondary.detach().to("cpu", torch.float64)
    # a NaN score must never win: rank it below everything
    return primary.nan_to_num(-math.inf), secondary.nan_to_num(-math.inf)


def _propose(pool: _Pool, m: int, radius: float, gens: list[torch.Generator]) -> Tensor:
    """m new unit-cube points per seed around the pool's elites: [S, m, p]; seed i draws from gens[i]."""
    return torch.stack([_propose_one(pool.points[i], m, radius, gen) for i, gen in enumerate(gens)])


def _propose_one(elites: Tensor, m: int, radius: float, gen: torch.Generator) -> Tensor:
    """m unit-cube points [m, p] around one problem's elites [E, p] (best first)."""
    e, p = elites.shape
    n_best, n_elite, n_coord = m // 2, m // 4, m // 8
    n_uniform = m - n_best - n_elite - n_coord

    def box_around(centres: Tensor, width: float) -> Tensor:
        step = (torch.rand(centres.shape, generator=gen, dtype=torch.float64) * 2 - 1) * width
        return (centres + step).clamp(0, 1)

    best = elites[:1]
    around_best = box_around(best.expand(n_best, p), radius)
    around_elites = box_around(elites[torch.randint(0, e, (n_elite,), generator=gen)], radius)
    coord = best.expand(n_coord, p).clone()
    dim = torch.randint(0, p, (n_coord, 1), generator=gen)
    coord.scatter_(1, dim, box_around(coord.gather(1, dim), 2 * radius))
    uniform = torch.rand(n_uniform, p, generator=gen, dtype=torch.float64)
    return torch.cat([around_best, around_elites, coord, uniform], 0)


def _check(low, high, num_seeds, rounds, per_round, log_scale, grid, p) -> None:
    if low.ndim != 1 or tuple(high.shape) != (p,):
        raise BridgeInputError(f"search bounds must be two [p] tensors, got {list(low.shape)} and {list(high.shape)}")
    if bool((high < low).any()):
        raise BridgeInputError("search bounds: some high < low")
    if num_seeds < 1 or rounds < 1 or per_round < 0:
        raise BridgeInputError(f"search needs num_seeds, rounds >= 1 and per_round >= 0; got "
                               f"{num_seeds}, {rounds}, {per_round}")
    if per_round == 0 and (grid is None or grid.shape[0] == 0):
        raise BridgeInputError("a search with per_round 0 scores its grid alone, and has no grid")
    if log_scale is not None:
        if len(log_scale) != p:
            raise BridgeInputError(f"log_scale has {len(log_scale)} entries for {p} parameters")
        if any(flag and float(lo) <= 0 for flag, lo in zip(log_scale, low.tolist())):
            raise BridgeInputError("a log-scale search parameter needs a positive lower bound")
    if grid is not None and (grid.ndim != 2 or grid.shape[1] != p):
        raise BridgeInputError(f"search grid must be [G, {p}], got {list(grid.shape)}")
