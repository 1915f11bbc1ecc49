"""bridge.search.batched_search: deterministic, finds optima, seeds independent, documented tie-breaking."""
from __future__ import annotations

import pytest
import torch

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.search import batched_search

LOW = torch.tensor([0.0, 0.0, 0.0, 0.0])


HIGH = torch.tensor([1.5, 10.0, 1.0, 1.0])
OPT = torch.tensor([[0.3, 7.0, 0.0, 0.55], [1.2, 2.0, 1.0, 0.1]])


def quadratic(cand: torch.Tensor) -> torch.Tensor:
    """[S, M, 4] -> [S, M], maximum 0 at OPT[s] (a corner coordinate included)."""
    return -(((cand - OPT[:, None, :]) / HIGH) ** 2).sum(-1)


def test_search_finds_the_known_optimum_of_a_smooth_objective():
    result = batched_search(quadratic, LOW, HIGH, num_seeds=2, rounds=8, per_round=128, seed=3)
    assert torch.allclose(result.best, OPT, atol=0.05 * float(HIGH.max()))
    assert float(result.best_score.min()) > -1e-3
    assert result.evaluated == 8 * 128


def test_search_is_deterministic_for_a_seed_and_changes_with_it():
    a = batched_search(quadratic, LOW, HIGH, num_seeds=2, rounds=4, per_round=64, seed=5)
    b = batched_search(quadratic, LOW, HIGH, num_seeds=2, rounds=4, per_round=64, seed=5)
    c = batched_search(quadratic, LOW, HIGH, num_seeds=2, rounds=4, per_round=64, seed=6)
    assert torch.equal(a.best, b.best) and torch.equal(a.best_score, b.best_score)
    assert not torch.equal(a.best, c.best)


def test_search_with_one_seed_per_problem_does_not_depend_on_the_other_problems():
    both = batched_search(quadratic, LOW, HIGH, num_seeds=2, rounds=4, per_round=64, seed=[11, 12])
    second = batched_search(lambda c: quadratic(torch.cat([c, c]))[1:], LOW, HIGH, num_seeds=1, rounds=4,
                            per_round=64, seed=[12])
    assert torch.equal(both.best[1], second.best[0])


def test_search_breaks_accuracy_ties_with_the_secondary_score_then_evaluation_order():
    # a flat primary everywhere: the secondary (prefer small first coordinate) decides
    def flat(cand):
        return torch.ones(cand.shape[:2]), -cand[..., 0]

    result = batched_search(flat, LOW, HIGH, num_seeds=1, rounds=6, per_round=64, seed=0)
    assert float(result.best[0, 0]) < 0.05
    # no secondary at all: the first grid point (evaluated first) is kept
    grid = torch.tensor([[0.7, 3.0, 0.5, 0.5], [0.1, 1.0, 0.2, 0.2]])
    kept = batched_search(lambda c: torch.ones(c.shape[:2]), LOW, HIGH, num_seeds=1, rounds=3, per_round=16,
                          seed=0, grid=grid)
    assert torch.allclose(kept.best[0], grid[0].to(kept.best.dtype), atol=1e-6)


def test_search_on_a_log_scale_reaches_small_values():
    target = torch.tensor([[1e-3]])
    result = batched_search(lambda c: -(c.log() - target.log()).abs()[..., 0], torch.tensor([1e-4]),
                            torch.tensor([100.0]), num_seeds=1, rounds=6, per_round=32, seed=1, log_scale=[True])
    assert 5e-4 < float(result.best[0, 0]) < 2e-3


def test_search_rejects_bad_bounds_and_wrong_score_shapes():
    with pytest.raises(BridgeInputError):
        batched_search(quadratic, HIGH, LOW, num_seeds=2, rounds=2, per_round=16, seed=0)
    with pytest.raises(BridgeInputError):
        batched_search(lambda c: torch.zeros(3), LOW, HIGH, num_seeds=2, rounds=2, per_round=16, seed=0)


def test_box_grid_without_endpoint_is_the_official_tip_adapter_grid():
    from clipbridge.bridge.fusion import box_grid

    grid = box_grid([0.1, 0.1], [12.0, 5.0], [200, 20], endpoint=False, dtype=torch.float64)
    assert grid.shape == (4000, 2)
    torch.testing.assert_close(grid[21], torch.tensor([0.1 + 1 * 11.9 / 200, 0.1 + 1 * 4.9 / 20], dtype=torch.float64))
    assert float(grid[:, 0].max()) < 12.0 and float(grid[:, 1].max()) < 5.0


class _TiedLazy:
    """A LazyScore with a tied primary and a smooth secondary; records, per secondary call, its candidates (seeds
    that need any × the widest seed's), and the `keep` each bounded_primary call was asked for."""

    def __init__(self):
        self.secondary_needed, self.keeps, self.asked = [], [], []

    @staticmethod
    def _scores(x):
        primary = torch.floor(-30 * ((x[..., 0] - 1).abs() + (x[..., 1] - 2).abs()))    # a sharp, tied peak
        return primary, -(x[..., 0] - 1.3) ** 2 - (x[..., 1] - 0.7) ** 2

    def primary(self, x):
        return self._scores(x)[0]

    def bounded_primary(self, x, keep, elites):
        self.keeps.append(keep)
        self.asked.append(x.clone())
        return self.primary(x)

    def secondary(self, x):
        self.secondary_needed.append(int(torch.isfinite(x[..., 0]).any(-1).sum()) * x.shape[1])
        return self._scores(x)[1]


def test_the_last_round_keeps_only_the_best_and_chooses_as_a_merge_keeping_every_elite(monkeypatch):
    """Only the best point is returned, so the last merge keeps one elite: its bounded primary is asked for keep = 1,
    its secondary only for ties at the top, and the proposals and the choice equal those of a last merge keeping all
    8 elites."""
    import clipbridge.bridge.search as search_module

    grid = torch.cartesian_prod(torch.linspace(0, 3, 5), torch.linspace(0, 3, 5))
    run = lambda score, seed: batched_search(score, torch.zeros(2), 3 * torch.ones(2), num_seeds=3, rounds=4,  # noqa: E731
                                             per_round=32, seed=seed, grid=grid)
    fewer = 0
    for seed in range(6):
        ours = _TiedLazy()
        got = run(ours, seed)
        assert ours.keeps == [8, 8, 8, 1]
        with monkeypatch.context() as patch:                           # every merge keeps 8 elites, as before
            patch.setattr(search_module._Pool, "resized", lambda self, size: self)
            every = _TiedLazy()
            want = run(every, seed)
        assert every.keeps == [8, 8, 8, 8]
        assert torch.equal(got.best, want.best) and torch.equal(got.best_score, want.best_score)
        assert all(torch.equal(a, b) for a, b in zip(ours.asked, every.asked, strict=True))   # the same proposals
        assert ours.secondary_needed[:-1] == every.secondary_needed[:len(ours.secondary_needed) - 1]
        fewer += sum(every.secondary_needed) - sum(ours.secondary_needed)
    assert fewer > 0
    grid_only = _TiedLazy()                                            # no rounds: the grid's merge is the last
    batched_search(grid_only, torch.zeros(2), 3 * torch.ones(2), num_seeds=1, rounds=3, per_round=0, seed=0, grid=grid)
    assert grid_only.keeps == [1]
