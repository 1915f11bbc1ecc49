"""The linear probe's solver and its two searches: the grid (default) and CoOp's lpclip (RECIPES.md §2.6).

scikit-learn is a test-only dependency (the `dev` extra): the tests that compare with it skip without it.
"""
from __future__ import annotations

import functools
import math
import warnings

import pytest
import torch

import clipbridge.bridge.methods  # noqa: F401  (registers every method)
from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.features import support_views
from clipbridge.bridge.log_bisection import grid_then_bisect
from clipbridge.bridge.logistic import fit_logistic
from clipbridge.bridge.registry import REGISTRY
from synthetic_tasks import make_task, seed_slice

COOP_GRID = [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6]
LPCLIP = {"features": "raw", "search": "lpclip"}


def overlapping_task():
    """4 classes × 8 shots in D = 6 with overlapping classes (no fit diverges, every C converges), 25
    validation images per class, float64."""
    return make_task(seeds=(1, 2, 3), classes=4, shots=8, dim=6, width=8, val_per_class=25, image_noise=1.0,
                     dtype=torch.float64, generator_seed=1)


@pytest.fixture
def sklearn():
    """sklearn.linear_model with one BLAS/OpenMP thread (as conftest gives torch one: on a busy machine more
    threads spin-wait); skips when scikit-learn is not installed."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield linear_model


def summed_objective(x, labels, c, w, b) -> float:
    """Σ_i CE_i + ‖W‖²/(2C) at (w [D, C], b [C]): scikit-learn's objective with C."""
    return float(torch.nn.functional.cross_entropy(x @ w + b, labels, reduction="sum") + (w ** 2).sum() / (2 * c))


def summed_objective_gradient(x, labels, c, w, b):
    """max |∇| of Σ_i CE_i + ‖W‖²/(2C) at (w [D, C], b [C]) by autograd."""
    w, b = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    value = torch.nn.functional.cross_entropy(x @ w + b, labels, reduction="sum") + (w ** 2).sum() / (2 * c)
    gw, gb = torch.autograd.grad(value, (w, b))
    return max(gw.abs().max().item(), gb.abs().max().item())


# ---------------------------------------------------------------- the solver against scikit-learn


def test_logistic_fit_matches_scikit_learn_for_several_c(sklearn):
    task, _, _ = overlapping_task()
    views = support_views(task, torch.float64, normalize=False)
    n = int(views.mask.sum())
    cs = [1e2, 1.0, 1e-2]
    l2 = torch.tensor([[1.0 / (c * n) for c in cs]] * task.num_seeds, dtype=torch.float64)
    fit = fit_logistic(views.x, views.labels, views.mask, l2, torch.zeros(task.dim, task.num_classes,
                       dtype=torch.float64), tol=1e-8)
    assert (fit.status <= 1).all()                                # converged (float64 stops near 1e-6)
    for s in range(2):
        for g, c in enumerate(cs):
            reference = sklearn.LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(
                views.x[s].numpy(), views.labels.numpy())
            assert reference.n_iter_[0] < 10000
            ref_w, ref_b = torch.from_numpy(reference.coef_.T.copy()), torch.from_numpy(reference.intercept_.copy())
            assert summed_objective_gradient(views.x[s], views.labels, c, fit.weight[s, g], fit.bias[s, g]) < 1e-5
            assert summed_objective_gradient(views.x[s], views.labels, c, ref_w, ref_b) < 1e-5
            # both sit at the optimum: equal objectives to 1e-9 relative; W, b to 1e-3 of the weights' scale (at
            # C = 100 the objective is flat enough that scikit-learn versions differ by a few 1e-4 there)
            ours = summed_objective(views.x[s], views.labels, c, fit.weight[s, g], fit.bias[s, g])
            theirs = summed_objective(views.x[s], views.labels, c, ref_w, ref_b)
            assert abs(ours - theirs) <= 1e-9 * abs(theirs)
            scale = 1e-3 * float(fit.weight[s, g].abs().max())
            torch.testing.assert_close(fit.weight[s, g], ref_w, rtol=0, atol=scale)
            torch.testing.assert_close(fit.bias[s, g], ref_b, rtol=0, atol=scale)


def coop_reference_choice(fit_accuracy, grid=COOP_GRID, steps=8):
    """CoOp's rule written out plainly: fit_accuracy(C) -> validation accuracy; returns (C, visited ends)."""
    accuracies = [fit_accuracy(c) for c in grid]
    peak = grid[accuracies.index(max(accuracies))]
    left, right = 0.1 * peak, 10.0 * peak
    ends = []
    for _ in range(steps):
        ends.append((left, right))
        acc_left, acc_right = fit_accuracy(left), fit_accuracy(right)
        middle = 10.0 ** (0.5 * (math.log10(left) + math.log10(right)))
        if acc_left < acc_right:
            chosen, left = right, middle
        else:
            chosen, right = left, middle
    return chosen, ends


def test_lpclip_search_chooses_the_c_of_coop_s_loop_over_scikit_learn(sklearn):
    task, _, _ = overlapping_task()
    state = REGISTRY["linear-probe"].fit(task, **LPCLIP, tol=1e-8)
    assert state.info["lbfgs_capped_fits"] == [0, 0, 0]
    for s in range(task.num_seeds):
        x = task.support[s].reshape(-1, task.dim).numpy()
        y = task.support_labels.numpy()

        @functools.lru_cache(maxsize=None)
        def fit_accuracy(c, s=s, x=x, y=y):
            with warnings.catch_warnings():
                warnings.simplefilter("error")            # a ConvergenceWarning would make the reference moot
                model = sklearn.LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(x, y)
            return 100.0 * float((model.predict(task.val[s].numpy()) == task.val_labels[s].numpy()).mean())

        chosen, ends = coop_reference_choice(fit_accuracy)
        assert state.hparams[s]["C"] == pytest.approx(chosen, rel=1e-12)
        assert state.info["val_accuracy_per_c"][s] == [fit_accuracy(c) for c in COOP_GRID]
        assert sum(state.info["bisection_ends"][s], []) == pytest.approx(sum(map(list, ends), []), rel=1e-12)
    assert len({h["C"] for h in state.hparams}) == 3          # three different choices: the test can fail


# ---------------------------------------------------------------- lpclip without scikit-learn


def independent_fit(x, y, c):
    """argmin_{W, b} Σ_i CE(x_i W + b, y_i) + ‖W‖²/(2C) (scikit-learn's objective with C), by torch.optim.LBFGS
    with a strong-Wolfe line search from zero: a solver that shares nothing with bridge.logistic."""
    w = torch.zeros(x.shape[1], int(y.max()) + 1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(int(y.max()) + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=5000, tolerance_grad=1e-11, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = torch.nn.functional.cross_entropy(x @ w + b, y, reduction="sum") + (w ** 2).sum() / (2 * c)
        value.backward()
        return value

    opt.step(closure)
    return w.detach(), b.detach()


@pytest.mark.parametrize("c", [1e-2, 1.0])
def test_lpclip_fit_at_c_is_the_optimum_of_the_objective_scaled_by_c_times_n(c):
    """λ = 1/(C·n): the fit at C must zero the gradient of Σ CE + ‖W‖²/(2C) (scikit-learn's objective),
    computed here by autograd, and not that of the objective at C/n (what λ = 1/C would solve)."""
    task, _, _ = overlapping_task()
    state = REGISTRY["linear-probe"].fit(task, **LPCLIP, c_grid=[c], bisection_steps=0)
    for s in range(task.num_seeds):
        x, y = task.support[s].reshape(-1, task.dim), task.support_labels
        w, b = state.tensors["weight"][s], state.tensors["bias"][s]
        assert state.hparams[s]["C"] == c
        assert summed_objective_gradient(x, y, c, w, b) <= 1e-4 * (1 + 1e-6)     # tol 1e-4 on the summed form
        assert summed_objective_gradient(x, y, c / x.shape[0], w, b) > 1.0


@pytest.mark.slow
def test_lpclip_search_chooses_the_c_of_coop_s_loop_with_an_independent_solver():
    """The scikit-learn comparison above, without scikit-learn (about 20 s: weakly regularised fits)."""
    task, _, _ = overlapping_task()
    task = seed_slice(task, 1)
    state = REGISTRY["linear-probe"].fit(task, **LPCLIP, tol=1e-8, bisection_steps=3)
    x, y = task.support[0].reshape(-1, task.dim), task.support_labels

    @functools.lru_cache(maxsize=None)
    def fit_accuracy(c):
        w, b = independent_fit(x, y, c)
        return 100.0 * float(((task.val[0] @ w + b).argmax(-1) == task.val_labels[0]).double().mean())

    chosen, ends = coop_reference_choice(fit_accuracy, steps=3)
    assert state.hparams[0]["C"] == pytest.approx(chosen, rel=1e-12)
    assert state.info["val_accuracy_per_c"][0] == [fit_accuracy(c) for c in COOP_GRID]
    assert sum(state.info["bisection_ends"][0], []) == pytest.approx(sum(map(list, ends), []), rel=1e-12)


def test_grid_search_breaks_accuracy_ties_by_the_true_class_log_probability_then_the_larger_lambda():
    """Every λ of the grid fitted on its own (one-point grids), scored here: among the λ of best validation
    accuracy, the one of highest mean log-probability of the true class is chosen."""
    task, _, _ = make_task(seeds=(1, 2), classes=3, shots=6, dim=6, width=8, val_per_class=4, image_noise=0.5,
                           dtype=torch.float64, generator_seed=2)
    lambdas = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    m = REGISTRY["linear-probe"]
    state = m.fit(task)
    val = torch.nn.functional.normalize(task.val, dim=-1)
    ties_decided = 0
    for s in range(2):
        scores = []
        for lam in lambdas:
            single = m.fit(task, lambda_low=lam, lambda_high=lam, lambda_points=1)
            logits = val[s] @ single.tensors["weight"][s] + single.tensors["bias"][s]
            acc = float((logits.argmax(-1) == task.val_labels[s]).double().mean())
            logp = float(torch.log_softmax(logits, -1).gather(-1, task.val_labels[s].unsqueeze(-1)).mean())
            scores.append((acc, logp, lam))
        best = max(scores)                                        # accuracy, then log-probability, then λ
        assert state.hparams[s]["lambda"] == pytest.approx(best[2], rel=1e-9)
        tied = [lam for acc, _, lam in scores if acc == best[0]]
        ties_decided += len(tied) > 1 and best[2] != max(tied)
    assert ties_decided                                           # the log-probability decided a tie


# ---------------------------------------------------------------- the bisection rule, with scorers we control


def scripted(scores):
    """fit_score whose accuracy for seed s is scores[s](C); the fitted tensor is C itself (so the carried
    tensors can be checked); records the batch widths it was called with."""
    widths = []

    def fit_score(values):
        widths.append(values.shape[1])
        acc = torch.tensor([[float(scores[s](v)) for v in row] for s, row in enumerate(values.tolist())],
                           dtype=torch.float64)
        return acc, (values.clone(),)

    return fit_score, widths


def test_bisection_follows_the_rule_step_by_step_for_every_seed():
    peaks = [2.3, -3.6]                                           # log10 of each seed's best C
    scores = [lambda c, p=p: round(50 - 7 * abs(math.log10(c) - p)) for p in peaks]   # unimodal, with ties
    fit_score, widths = scripted(scores)
    choice = grid_then_bisect(fit_score, COOP_GRID, 8, num_seeds=2)
    assert widths == [7, 2] + [1] * 7                             # the kept end is never refitted
    for s in range(2):
        chosen, ends = coop_reference_choice(scores[s])
        assert choice.value[s].item() == pytest.approx(chosen, rel=1e-12)
        assert choice.ends[s].flatten().tolist() == pytest.approx(sum(map(list, ends), []), rel=1e-12)
        assert choice.accuracy[s].item() == scores[s](choice.value[s].item())
    torch.testing.assert_close(choice.fitted[0], choice.value)
    assert abs(math.log10(choice.value[0]) - 2.3) < 0.2 and abs(math.log10(choice.value[1]) + 3.6) < 0.2


def test_ties_keep_the_first_grid_maximum_and_the_smaller_end():
    flat, _ = scripted([lambda c: 50.0])
    choice = grid_then_bisect(flat, COOP_GRID, 8, num_seeds=1)
    assert choice.value.item() == pytest.approx(1e5)             # peak 1e6 (first), then always the left end
    assert all(right > left for left, right in choice.ends[0].tolist())
    rising, _ = scripted([lambda c: math.log10(c)])
    assert grid_then_bisect(rising, COOP_GRID, 8, num_seeds=1).value.item() == pytest.approx(1e7)
    no_steps, widths = scripted([lambda c: -abs(math.log10(c))])
    choice = grid_then_bisect(no_steps, COOP_GRID, 0, num_seeds=1)
    assert choice.value.item() == 1.0 and widths == [7]


# ---------------------------------------------------------------- the method's two modes


def test_lpclip_seed_batch_equals_single_seed_runs_in_float64():
    task, test_x, _ = make_task(seeds=(3, 5, 8), dtype=torch.float64)
    m = REGISTRY["linear-probe"]
    batched = m.fit(task, **LPCLIP, bisection_steps=3)
    logits = m.logits(batched, test_x)
    for s in range(3):
        single = m.fit(seed_slice(task, s), **LPCLIP, bisection_steps=3)
        assert single.hparams[0] == batched.hparams[s]
        torch.testing.assert_close(m.logits(single, test_x)[0], logits[s], rtol=1e-9, atol=1e-9)


def test_raw_features_probe_scores_raw_queries():
    task, test_x, _ = make_task(seeds=(1, 2), dtype=torch.float64)
    m = REGISTRY["linear-probe"]
    state = m.fit(task, **LPCLIP, bisection_steps=2)
    expected = test_x @ state.tensors["weight"] + state.tensors["bias"].unsqueeze(1)
    torch.testing.assert_close(m.logits(state, test_x), expected)
    normalized = m.fit(task, search="lpclip", bisection_steps=2)
    torch.testing.assert_close(m.logits(normalized, 3 * test_x), m.logits(normalized, test_x))
    assert not torch.allclose(m.logits(state, 3 * test_x), m.logits(state, test_x))


def test_grid_mode_solves_every_lambda_to_the_optimum():
    task, _, _ = make_task(seeds=(1, 2), shots=6, dtype=torch.float64)
    views = support_views(task, torch.float64)
    n = int(views.mask.sum())
    lambdas = torch.tensor([[1e-5, 1e-3, 1e-1]] * 2, dtype=torch.float64)
    fit = fit_logistic(views.x, views.labels, views.mask, lambdas, torch.zeros(task.dim, task.num_classes,
                       dtype=torch.float64), tol=1e-6)
    for s in range(2):
        for g, lam in enumerate(lambdas[s].tolist()):
            assert summed_objective_gradient(views.x[s], views.labels, 1 / (lam * n), fit.weight[s, g],
                                             fit.bias[s, g]) <= 1e-6, (s, lam)
    assert (fit.bias.sum(-1).abs() < 1e-10).all()                 # the intercept's flat direction is not taken


def test_seeds_solved_in_memory_bounded_chunks_give_the_same_fits(monkeypatch):
    import clipbridge.bridge.logistic as logistic

    task, _, _ = make_task(seeds=(1, 2, 3, 4, 5), dtype=torch.float64)
    views = support_views(task, torch.float64)
    l2 = torch.tensor([[1e-4, 1e-2]] * 5, dtype=torch.float64)
    w0 = torch.zeros(task.dim, task.num_classes, dtype=torch.float64)
    whole = fit_logistic(views.x, views.labels, views.mask, l2, w0)
    per_seed_history = 2 * 10 * 2 * (task.dim + 1) * task.num_classes
    monkeypatch.setattr(logistic, "HISTORY_ELEMENTS", 2 * per_seed_history)        # chunks of 2, 2, 1 seeds
    batches = []

    def counting(objective, x0, **options):
        batches.append(x0.shape[0])
        return original(objective, x0, **options)

    original = logistic.minimize
    monkeypatch.setattr(logistic, "minimize", counting)
    chunked = fit_logistic(views.x, views.labels, views.mask, l2, w0)
    assert batches == [4, 4, 2]                                   # problems = seeds × 2 strengths
    for field in ("weight", "bias", "iterations", "status"):
        assert torch.equal(getattr(chunked, field), getattr(whole, field)), field


def test_fits_stopped_by_the_iteration_cap_are_reported():
    task, _, _ = make_task(seeds=(1, 2))
    state = REGISTRY["linear-probe"].fit(task, max_iter=2, tol=0.0)
    assert state.info["lbfgs_status"] == ["cap", "cap"] and state.info["lbfgs_iterations"] == [2, 2]
    assert state.info["lbfgs_capped_fits"] == [6, 6]             # every λ of the default grid
    done = REGISTRY["linear-probe"].fit(task, **LPCLIP, bisection_steps=1)
    assert all(status in ("gradient", "decrease") for status in done.info["lbfgs_status"])


@pytest.mark.parametrize("bad, match", [
    ({"init": "text", "features": "raw"}, "normalized"), ({"search": "bisect"}, "search"),
    ({"features": "unit"}, "features"), ({"c_grid": []}, "c_grid"), ({"c_grid": [1.0, 0.0]}, "c_grid"),
    ({"max_iter": -1}, "max_iter"), ({"bisection_steps": 2.5}, "bisection_steps"), ({"tol": "tight"}, "tol"),
])
def test_bad_probe_hyper_parameters_are_input_errors(bad, match):
    task, _, _ = make_task(seeds=(1,))
    with pytest.raises(BridgeInputError, match=match):
        REGISTRY["linear-probe"].fit(task, **bad)


# ---------------------------------------------------------------- the speed script passes hyper-parameters


def test_speed_script_refuses_a_malformed_hparam(capsys):
    from clipbridge.evaluate.bench.speed import main

    with pytest.raises(SystemExit) as stop:
        main(["--methods", "linear-probe", "--hparam", "linear-probe.no_such_knob=1"])
    assert stop.value.code == 2 and "unknown hyper-parameter" in capsys.readouterr().err


@pytest.mark.slow
def test_speed_script_passes_hparams_to_the_method(capsys):
    from clipbridge.evaluate.bench.speed import main

    main(["--methods", "linear-probe", "--classes", "4", "--dim", "8", "--width", "8", "--shots", "1,2",
          "--seeds", "1-2", "--hparam", "linear-probe.search=lpclip", "--hparam", "linear-probe.features=raw"])
    out = capsys.readouterr().out
    assert "hyper-parameters: {'linear-probe': {'search': 'lpclip', 'features': 'raw'}}" in out
    assert "4 records in" in out and "shots 1: " in out
