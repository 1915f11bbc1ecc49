"""The shared training loop (bridge/training.py) and the shared search/feature helpers of the baselines."""
from __future__ import annotations

import pytest
import torch

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.features import normalize_rows, shot_keys
from clipbridge.bridge.fusion import box_grid, linear_fusion_scorer, log_grid
from clipbridge.bridge.training import seed_permutations, train_and_select, view_cycle
from synthetic_tasks import make_task



def quadratic(targets: torch.Tensor):
    """Per-seed loss ‖p − target_s‖² on params p [S, 3]."""
    return lambda params, step: ((params["p"] - targets) ** 2).sum(-1)


def test_one_adamw_over_seed_batched_parameters_equals_independent_runs():
    targets = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]], dtype=torch.float64)
    init = {"p": torch.zeros(2, 3, dtype=torch.float64)}
    never = lambda params: torch.zeros(params["p"].shape[0], dtype=torch.float64)  # noqa: E731
    both = train_and_select(init, quadratic(targets), never, steps=25, lr=0.1, select="last")
    for s in range(2):
        one = train_and_select({"p": init["p"][s:s + 1]}, quadratic(targets[s:s + 1]), never, steps=25, lr=0.1,
                               select="last")
        torch.testing.assert_close(one.params["p"][0], both.params["p"][s], rtol=0, atol=0)


def test_selection_keeps_the_first_evaluated_step_with_best_validation_accuracy_per_seed():
    targets = torch.tensor([[4.0, 0.0, 0.0], [4.0, 0.0, 0.0]])
    peak = torch.tensor([1.0, 3.0])      # validation "accuracy" is highest when p[0] is near the peak

    def val(params):
        return 100.0 - (params["p"][:, 0] - peak).abs().round(decimals=1)

    result = train_and_select({"p": torch.zeros(2, 3)}, quadratic(targets), val, steps=40, lr=0.1, eval_every=5)
    curve = result.curve.T
    for s in range(2):
        first_best = int(torch.argmax(curve[s]))
        assert result.step[s] == result.curve_steps[first_best]
        assert result.val_accuracy[s] == curve[s].max()
    assert result.step[0] < result.step[1] < 40
    assert result.curve_steps == [0, 5, 10, 15, 20, 25, 30, 35, 40]
    last = train_and_select({"p": torch.zeros(2, 3)}, quadratic(targets), val, steps=int(result.step[0]), lr=0.1,
                            eval_every=5, select="last")
    torch.testing.assert_close(last.params["p"][0], result.params["p"][0])


def test_selection_keeps_the_earliest_of_tied_best_evaluations():
    """Validation accuracy on a plateau (100 once p[0] passes a threshold, per seed): of the tied evaluations,
    the earliest is kept, with its parameters."""
    targets = torch.tensor([[4.0, 0.0, 0.0], [4.0, 0.0, 0.0]], dtype=torch.float64)
    threshold = torch.tensor([0.5, 2.0], dtype=torch.float64)

    def plateau(threshold):
        return lambda params: torch.where(params["p"][:, 0] >= threshold, 100.0, 50.0).to(torch.float64)

    result = train_and_select({"p": torch.zeros(2, 3, dtype=torch.float64)}, quadratic(targets), plateau(threshold),
                              steps=60, lr=0.1, eval_every=5)
    curve = result.curve.T
    for s in range(2):
        tied = [step for step, acc in zip(result.curve_steps, curve[s].tolist()) if acc == 100.0]
        assert len(tied) > 2 and result.step[s] == tied[0] < 60
        again = train_and_select({"p": torch.zeros(1, 3, dtype=torch.float64)}, quadratic(targets[s:s + 1]),
                                 plateau(threshold[s:s + 1]), steps=tied[0], lr=0.1, select="last")
        torch.testing.assert_close(again.params["p"][0], result.params["p"][s])


def test_one_sgd_over_seed_batched_parameters_equals_independent_runs():
    targets = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]], dtype=torch.float64)
    init = {"p": torch.zeros(2, 3, dtype=torch.float64)}
    never = lambda params: torch.zeros(params["p"].shape[0], dtype=torch.float64)  # noqa: E731
    rate = lambda step: 0.05 if step < 5 else 0.1  # noqa: E731
    kw = dict(steps=25, lr=0.1, select="last", optimizer="sgd", momentum=0.9, weight_decay=5e-4, schedule=rate)
    both = train_and_select(init, quadratic(targets), never, **kw)
    for s in range(2):
        one = train_and_select({"p": init["p"][s:s + 1]}, quadratic(targets[s:s + 1]), never, **kw)
        torch.testing.assert_close(one.params["p"][0], both.params["p"][s], rtol=0, atol=0)
    p, buf = torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64)
    for step in range(25):                                      # torch.optim.SGD: coupled decay, momentum
        grad = 2 * (p - targets) + 5e-4 * p
        buf = grad if step == 0 else 0.9 * buf + grad
        p = p - rate(step) * buf
    torch.testing.assert_close(both.params["p"], p)


def test_non_finite_loss_is_an_input_error_not_a_silent_nan():
    loss = lambda params, step: (params["p"] * float("nan")).sum(-1)  # noqa: E731
    with pytest.raises(BridgeInputError, match="non-finite"):
        train_and_select({"p": torch.ones(1, 2)}, loss, lambda p: torch.zeros(1), steps=3, lr=0.1)


def test_bad_training_settings_are_refused():
    args = ({"p": torch.ones(1, 2)}, lambda p, s: p["p"].sum(-1), lambda p: torch.zeros(1))
    for bad in ({"select": "median"}, {"schedule": "step"}, {"eval_every": 0}, {"steps": -1}, {"optimizer": "adam"}):
        with pytest.raises(BridgeInputError):
            train_and_select(*args, **{"steps": 2, "lr": 0.1, **bad})


def test_seed_permutations_are_per_seed_and_cover_only_real_indices():
    valid = torch.tensor([True, False, True, True, False, True])
    perms = seed_permutations((1, 2), valid, rounds=3)
    assert perms.shape == (2, 3, 4)
    for s in range(2):
        for r in range(3):
            assert sorted(perms[s, r].tolist()) == [0, 2, 3, 5]
    torch.testing.assert_close(seed_permutations((2,), valid, rounds=3)[0], perms[1])


def test_view_cycle_gives_every_real_shot_once_per_epoch_with_view_epoch_mod_v():
    mask = torch.ones(3, 4 * 3, dtype=torch.bool)                # C = 3, K = 4, V = 3
    mask[1, 6:] = False                                          # class 1: 2 real shots
    cycle = view_cycle((1, 2), mask, views=3, epochs=7, batch_size=4)
    real_shots = [c * 4 + k for c in range(3) for k in range(4) if mask[c, k * 3]]
    assert cycle.order.shape == (2, 7, len(real_shots))
    for s in range(2):
        for e in range(7):
            shots, view = cycle.order[s, e] // 3, cycle.order[s, e] % 3
            assert sorted(shots.tolist()) == real_shots
            assert (view == e % 3).all()
    assert not torch.equal(cycle.order[0], cycle.order[1])      # each seed its own shuffle
    torch.testing.assert_close(view_cycle((2,), mask, 3, 7, 4).order[0], cycle.order[1])


def test_view_cycle_batches_split_each_epoch_in_order_and_zero_means_full_batch():
    mask = torch.ones(2, 5 * 2, dtype=torch.bool)
    cycle = view_cycle((1,), mask, views=2, epochs=3, batch_size=4)
    assert cycle.steps_per_epoch == 3 and cycle.steps == 9
    for e in range(3):
        parts = [cycle.batch(e * 3 + i) for i in range(3)]
        assert [p.shape[1] for p in parts] == [4, 4, 2]
        assert torch.equal(torch.cat(parts, 1), cycle.order[:, e])
    full = view_cycle((1,), mask, views=2, epochs=2, batch_size=0)
    assert full.steps_per_epoch == 1 and full.batch(1).shape == (1, 10)
    assert view_cycle((1,), mask, views=2, epochs=0, batch_size=4).steps == 0


def test_view_cycle_with_one_view_is_plain_shuffled_mini_batch_training():
    mask = torch.tensor([[True, True, True], [True, False, False]])
    cycle = view_cycle((5, 6), mask, views=1, epochs=4, batch_size=2)
    torch.testing.assert_close(cycle.order, seed_permutations((5, 6), mask.reshape(-1), 4))


def test_view_cycle_cycles_through_the_real_views_of_a_partly_padded_shot():
    mask = torch.tensor([[True, False, True, True, True, True]])       # shot 0: views 0 and 2 real
    cycle = view_cycle((1,), mask, views=3, epochs=4, batch_size=0)
    picked = [[int(i) for i in cycle.order[0, e] if i < 3] for e in range(4)]
    assert picked == [[0], [2], [0], [2]]


def test_shot_keys_average_the_raw_views_of_a_shot_and_skip_padding():
    task, _, _ = make_task(seeds=(1,), shots=2, views=3, missing={0: 1})
    keys = shot_keys(task, torch.float32)
    assert keys.x.shape == (1, task.num_classes * 2, task.dim)
    assert keys.mask.tolist()[:4] == [True, False, True, True]
    mean = task.support[0, 1, 3:6].mean(0)
    torch.testing.assert_close(keys.x[0, 3], mean / mean.norm())
    assert torch.equal(keys.x[0, 1], torch.zeros(task.dim))


def test_normalize_rows_names_the_zero_row():
    x = torch.ones(2, 3, 4)
    x[1, 2] = 0
    with pytest.raises(BridgeInputError, match=r"support holds an all-zero embedding at index \[1, 2\]"):
        normalize_rows(x, torch.ones(2, 3, dtype=torch.bool), "support")
    out = normalize_rows(x, torch.tensor([True, True, False]), "support")
    assert torch.equal(out[1, 2], torch.zeros(4))


def test_linear_fusion_scorer_scores_every_candidate_and_breaks_ties_by_log_probability():
    base = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])          # [S=1, Nv=2, C=2]
    extra = torch.tensor([[[-1.0, 1.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, 1]])
    acc, logp = linear_fusion_scorer(base, extra, labels)(torch.tensor([[[0.0], [1.5], [3.0]]]))
    assert acc.tolist() == [[50.0, 100.0, 100.0]]
    assert logp[0, 2] > logp[0, 1]


def test_grids_are_inclusive_and_log_spaced():
    torch.testing.assert_close(log_grid(1e-4, 100, 7), torch.tensor([1e-4, 1e-3, 1e-2, 0.1, 1, 10, 100],
                                                                     dtype=torch.float64))
    grid = box_grid([0, 0], [10, 1], [3, 2])
    assert grid.tolist() == [[0, 0], [0, 1], [5, 0], [5, 1], [10, 0], [10, 1]]
    with pytest.raises(BridgeInputError):
        log_grid(0.0, 1.0, 3)
