"""Behaviour of the baselines: zero-shot, Tip-Adapter(-F), GDA, linear probe, CMM (METHOD.md §4–5)."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

import clipbridge.bridge.methods  # noqa: F401  (registers every method)
from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.features import shot_keys
from clipbridge.bridge.registry import REGISTRY
from clipbridge.bridge.text import class_text
from synthetic_tasks import make_task, seed_slice


BASELINES = ["tip-adapter", "tip-adapter-f", "gda", "linear-probe", "cmm"]
QUICK = {"cmm": {"steps": 100}, "tip-adapter-f": {"epochs": 10}}


def test_acc(logits, labels) -> float:
    return 100.0 * (logits.argmax(-1) == labels).double().mean().item()


test_acc.__test__ = False


@pytest.fixture(scope="module")
def separable():
    """Few-shot images carry class information the text lacks: every baseline should use it."""
    return make_task(seeds=(1, 2, 3), classes=5, shots=8, val_per_class=8)


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_beats_zero_shot_by_ten_points_on_a_separable_task(name, separable):
    """Few-shot images carry class information the text lacks (tests/test_fused_beat_zero_shot.py pins each
    fused method's margin on a task where the gap is known by construction)."""
    task, test_x, test_y = separable
    zs = test_acc(REGISTRY["zeroshot"].logits(REGISTRY["zeroshot"].fit(task), test_x), test_y)
    m = REGISTRY[name]
    acc = test_acc(m.logits(m.fit(task, **QUICK.get(name, {})), test_x), test_y)
    assert acc >= zs + 10, f"{name} {acc:.1f}% < zero-shot {zs:.1f}% + 10"


def test_zeroshot_is_tau_times_cosine_to_the_class_prototypes():
    task, test_x, _ = make_task(seeds=(1, 2), dtype=torch.float64)
    text = class_text(task).projected
    q = test_x / test_x.norm(dim=-1, keepdim=True)
    logits = REGISTRY["zeroshot"].logits(REGISTRY["zeroshot"].fit(task), test_x)
    torch.testing.assert_close(logits, (task.logit_scale * q @ text.T).expand(2, -1, -1))


# ---------------------------------------------------------------- Tip-Adapter


def test_tip_adapter_with_alpha_zero_equals_zero_shot():
    task, test_x, _ = make_task(seeds=(1, 2))
    zs = REGISTRY["zeroshot"].logits(REGISTRY["zeroshot"].fit(task), test_x)
    state = REGISTRY["tip-adapter"].fit(task, alpha_low=0.0, alpha_high=0.0)
    assert [h["alpha"] for h in state.hparams] == [0.0, 0.0]
    torch.testing.assert_close(REGISTRY["tip-adapter"].logits(state, test_x), zs)


def test_tip_adapter_logits_match_a_direct_computation_with_mean_view_keys():
    task, test_x, _ = make_task(seeds=(2,), shots=3, views=2, missing={1: 2}, dtype=torch.float64)
    state = REGISTRY["tip-adapter"].fit(task)
    alpha, beta = state.hparams[0]["alpha"], state.hparams[0]["beta"]
    text = class_text(task).projected
    q = test_x / test_x.norm(dim=-1, keepdim=True)
    expected = task.logit_scale * q @ text.T
    for c in range(task.num_classes):
        for k in range(3):
            views = task.support[0, c, 2 * k:2 * k + 2]
            if not task.support_mask[c, 2 * k]:
                continue
            key = views.mean(0) / views.mean(0).norm()
            expected[:, c] += alpha * torch.exp(-beta * (1 - q @ key))
    torch.testing.assert_close(REGISTRY["tip-adapter"].logits(state, test_x)[0], expected)


def test_tip_adapter_search_finds_at_least_the_validation_accuracy_of_its_grid():
    task, _, _ = make_task(seeds=(1, 2, 3))
    state = REGISTRY["tip-adapter"].fit(task)
    grid_only = REGISTRY["tip-adapter"].fit(task, search_rounds=1, search_per_round=8)
    assert all(a >= b for a, b in zip(state.info["val_accuracy"], grid_only.info["val_accuracy"]))
    assert state.info["search_evaluated"] == 11 * 11 + 4 * 64


def test_tip_adapter_with_the_official_grid_reaches_at_least_the_official_loops_choice():
    """RECIPES.md §2.2: β_i = 0.1 + i(scale_β − 0.1)/200, α_j = 0.1 + j(scale_α − 0.1)/20, β outer, first strict max
    on validation. The batched search scores that grid, then refines: it can only do as well or better."""
    task, _, _ = make_task(seeds=(1, 2), classes=6, shots=4, dtype=torch.float64)
    box = {"alpha_low": 0.1, "alpha_high": 5.0, "beta_low": 0.1, "beta_high": 12.0, "grid_alpha": 20,
           "grid_beta": 200, "grid_endpoint": False}
    state = REGISTRY["tip-adapter"].fit(task, **box)
    text = class_text(task).projected
    keys = task.support / task.support.norm(dim=-1, keepdim=True)        # one view per shot: key = the shot
    val = task.val / task.val.norm(dim=-1, keepdim=True)
    for s in range(2):
        best, best_acc = None, -1.0
        for i in range(200):
            beta = 0.1 + i * (12.0 - 0.1) / 200
            affinity = val[s] @ keys[s].reshape(-1, task.dim).T
            cache = torch.exp(-beta * (1 - affinity)).reshape(val.shape[1], task.num_classes, -1).sum(-1)
            for j in range(20):
                alpha = 0.1 + j * (5.0 - 0.1) / 20
                logits = task.logit_scale * val[s] @ text.T + alpha * cache
                acc = 100.0 * float((logits.argmax(-1) == task.val_labels[s]).double().mean())
                if acc > best_acc:
                    best, best_acc = (alpha, beta), acc
        assert state.info["val_accuracy"][s] >= best_acc - 1e-9
        assert 0.1 <= state.hparams[s]["alpha"] <= 5.0 and 0.1 <= state.hparams[s]["beta"] <= 12.0
    assert state.info["search_evaluated"] == 200 * 20 + 4 * 64


def test_tip_adapter_f_zero_epochs_equals_tip_adapter():
    task, test_x, _ = make_task(seeds=(1, 2))
    tip = REGISTRY["tip-adapter"].fit(task)
    tipf = REGISTRY["tip-adapter-f"].fit(task, epochs=0)
    torch.testing.assert_close(REGISTRY["tip-adapter-f"].logits(tipf, test_x), REGISTRY["tip-adapter"].logits(tip, test_x))


def test_tip_adapter_f_keeps_the_epoch_with_best_validation_accuracy_not_the_last():
    task, _, _ = make_task(seeds=(1, 2), shots=4)
    hp = {"epochs": 10, "init_alpha": 20.0, "lr": 1e-2, "schedule": "constant"}
    state = REGISTRY["tip-adapter-f"].fit(task, **hp)
    curves = torch.tensor(state.info["train_val_accuracy"])                       # [S, epochs + 1]
    chosen = [h["epoch"] for h in state.hparams]
    assert chosen == [int(torch.argmax(c)) for c in curves]  # first maximum
    assert any(e != 10 and curves[s, e] > curves[s, -1] for s, e in enumerate(chosen))
    for s, e in enumerate(chosen):                           # the kept keys are those after epoch e
        again = REGISTRY["tip-adapter-f"].fit(seed_slice(task, s), **{**hp, "epochs": e, "select": "last"})
        torch.testing.assert_close(again.tensors["keys"][0], state.tensors["keys"][s])


def test_tip_adapter_f_with_validation_that_training_hurts_keeps_the_initial_keys():
    task, _, _ = make_task(seeds=(1, 2), shots=4)
    misleading = replace(task, val_labels=(task.val_labels + 1) % task.num_classes)
    state = REGISTRY["tip-adapter-f"].fit(misleading, epochs=10, init_alpha=20.0, lr=1e-2)
    curves = torch.tensor(state.info["train_val_accuracy"])
    assert (curves[:, -1] < curves[:, 0]).any()
    assert [h["epoch"] for h in state.hparams] == [0, 0]
    torch.testing.assert_close(state.tensors["keys"], shot_keys(task, torch.float32).x)


def test_tip_adapter_f_mini_batches_depend_on_the_seed_only():
    task, _, _ = make_task(seeds=(1, 2))
    a = REGISTRY["tip-adapter-f"].fit(task, epochs=2, batch_size=7, lr=1e-2, select="last")
    b = REGISTRY["tip-adapter-f"].fit(replace(task, seeds=(1, 5)), epochs=2, batch_size=7, lr=1e-2, select="last")
    torch.testing.assert_close(a.tensors["keys"][0], b.tensors["keys"][0])
    assert not torch.allclose(a.tensors["keys"][1], b.tensors["keys"][1])


# ---------------------------------------------------------------- GDA


def test_gda_matches_a_direct_float64_computation_of_its_formula():
    task, test_x, _ = make_task(seeds=(1, 2), shots=5, views=2, missing={0: 3}, dtype=torch.float64)
    state = REGISTRY["gda"].fit(task)
    text = class_text(task).projected
    q = test_x / test_x.norm(dim=-1, keepdim=True)
    c, d = task.num_classes, task.dim
    for s in range(2):
        per_class = [task.support[s, k][task.support_mask[k]] for k in range(c)]
        per_class = [x / x.norm(dim=-1, keepdim=True) for x in per_class]
        mu = torch.stack([x.mean(0) for x in per_class])
        centred = torch.cat([x - mu[k] for k, x in enumerate(per_class)])
        cov = torch.cov(centred.T)
        n = centred.shape[0]
        precision = d * torch.linalg.pinv((n - 1) * cov + torch.trace(cov) * torch.eye(d, dtype=torch.float64))
        w = mu @ precision.T
        b = math.log(1 / c) - 0.5 * torch.einsum("cd,de,ce->c", mu, precision, mu)
        alpha = state.hparams[s]["alpha"]
        expected = task.logit_scale * q @ text.T + alpha * (q @ w.T + b)
        torch.testing.assert_close(REGISTRY["gda"].logits(state, test_x)[s], expected)


def test_gda_alpha_is_chosen_from_the_log_grid_or_the_search_points_within_range():
    task, _, _ = make_task(seeds=(1, 2, 3))
    state = REGISTRY["gda"].fit(task)
    assert all(1e-4 * (1 - 1e-6) <= h["alpha"] <= 100 * (1 + 1e-6) for h in state.hparams)
    assert state.info["search_evaluated"] == 7 + 8


def test_gda_with_one_view_per_class_reduces_to_zero_shot():
    task, test_x, _ = make_task(seeds=(1,), shots=1)
    zs = REGISTRY["zeroshot"].logits(REGISTRY["zeroshot"].fit(task), test_x)
    gda = REGISTRY["gda"].logits(REGISTRY["gda"].fit(task), test_x)
    torch.testing.assert_close(gda - gda.mean(-1, keepdim=True), zs - zs.mean(-1, keepdim=True))


# ---------------------------------------------------------------- linear probe


def test_linear_probe_text_init_with_huge_lambda_is_zero_shot_plus_a_class_bias():
    task, test_x, _ = make_task(seeds=(1,), dtype=torch.float64)
    zs = REGISTRY["zeroshot"].logits(REGISTRY["zeroshot"].fit(task), test_x)
    state = REGISTRY["linear-probe"].fit(task, init="text", lambda_low=1e6, lambda_high=1e6, lambda_points=1)
    lp = REGISTRY["linear-probe"].logits(state, test_x)
    shift = lp - zs                                          # [1, N, C]: the same row for every query
    torch.testing.assert_close(shift, shift[:, :1].expand_as(shift), atol=1e-3, rtol=0)


def test_linear_probe_picks_lambda_with_best_validation_accuracy():
    task, _, _ = make_task(seeds=(1, 2, 3))
    state = REGISTRY["linear-probe"].fit(task)
    per_lambda = torch.tensor(state.info["val_accuracy_per_lambda"])
    assert torch.equal(torch.tensor(state.info["val_accuracy"]), per_lambda.max(-1).values)
    assert all(h["lambda"] in state.info["lambdas"] for h in state.hparams)


def test_linear_probe_rejects_an_unknown_init():
    task, _, _ = make_task(seeds=(1,))
    with pytest.raises(BridgeInputError, match="init"):
        REGISTRY["linear-probe"].fit(task, init="random")


# ---------------------------------------------------------------- CMM


def test_cmm_with_identity_map_and_text_prototypes_is_zero_shot_times_one_plus_alpha():
    """With Δ = 0 and T = T̄ (no step), logits = (1 + α)·τ q̄ T̄ᵀ: validation accuracy is the same for every α,
    so the search's tie-break, the mean true-class log-probability, decides. It is concave in α; the reference
    is its maximiser over [0, 5] by brute force on a fine grid (τ = 3, so the optimum is inside the range)."""
    task, test_x, _ = make_task(seeds=(1, 2), logit_scale=3.0, dtype=torch.float64)
    zs = REGISTRY["zeroshot"].logits(REGISTRY["zeroshot"].fit(task), test_x)
    state = REGISTRY["cmm"].fit(task, steps=0)
    assert torch.equal(state.tensors["delta"], torch.zeros_like(state.tensors["delta"]))
    text = class_text(task).projected
    grid = torch.linspace(0, 5, 5001, dtype=torch.float64)
    for s in range(2):
        z = 3.0 * torch.nn.functional.normalize(task.val[s], dim=-1) @ text.T
        logp = torch.log_softmax((1 + grid)[:, None, None] * z, -1)
        mean = logp.gather(-1, task.val_labels[s].expand(len(grid), -1).unsqueeze(-1)).squeeze(-1).mean(-1)
        best = float(grid[mean.argmax()])
        assert 0.5 < best < 4.5                                   # an interior optimum: α = 0 is wrong here
        assert abs(state.hparams[s]["alpha"] - best) <= 0.05 + 1e-9   # the search's grid step is 0.1
        torch.testing.assert_close(REGISTRY["cmm"].logits(state, test_x)[s], zs[s] * (1 + state.hparams[s]["alpha"]))


def test_cmm_keeps_the_step_with_best_validation_accuracy_not_the_last():
    task, _, _ = make_task(seeds=(1, 2), shots=4)
    misleading = replace(task, val_labels=(task.val_labels + 1) % task.num_classes)
    hp = {"steps": 60, "eval_every": 10}
    state = REGISTRY["cmm"].fit(misleading, **hp)
    curves = torch.tensor(state.info["train_val_accuracy"])
    steps = state.info["train_steps"]
    chosen = [h["step"] for h in state.hparams]
    assert chosen == [steps[int(torch.argmax(c))] for c in curves]
    assert any(st != 60 and curves[s, steps.index(st)] > curves[s, -1] for s, st in enumerate(chosen))
    for s, st in enumerate(chosen):
        again = REGISTRY["cmm"].fit(seed_slice(misleading, s), **{**hp, "steps": st, "select": "last"})
        torch.testing.assert_close(again.tensors["delta"][0], state.tensors["delta"][s])
        torch.testing.assert_close(again.tensors["protos"][0], state.tensors["protos"][s])


def test_cmm_alpha_is_searched_on_validation_within_zero_to_five():
    task, _, _ = make_task(seeds=(1, 2, 3))
    state = REGISTRY["cmm"].fit(task, steps=30)
    assert all(0.0 <= h["alpha"] <= 5.0 for h in state.hparams)
    assert state.info["search_evaluated"] == 51 + 2 * 16


def test_tip_adapter_f_cycle_trains_epoch_e_on_view_e_mod_v_of_every_shot():
    task, _, _ = make_task(seeds=(1, 2), shots=4, views=3)
    s, c, kv, d = task.support.shape
    swapped = task.support.reshape(s, c, kv // 3, 3, d)[..., [0, 2, 1], :].reshape(s, c, kv, d)   # views 1 <-> 2
    other = replace(task, support=swapped)                       # same keys (the mean), other views 1 and 2
    hp = {"train_views": "cycle", "batch_size": 8, "lr": 1e-2, "init_alpha": 20.0, "select": "last"}
    tipf = REGISTRY["tip-adapter-f"]
    one = [tipf.fit(t, **hp, epochs=1).tensors["keys"] for t in (task, other)]
    torch.testing.assert_close(one[0], one[1])                   # epoch 0 trains on view 0 only
    two = [tipf.fit(t, **hp, epochs=2).tensors["keys"] for t in (task, other)]
    assert not torch.allclose(two[0], two[1])                    # epoch 1 on view 1, which differs
    every = [tipf.fit(t, **{**hp, "train_views": "all"}, epochs=1).tensors["keys"] for t in (task, other)]
    assert not torch.allclose(every[0], every[1])                # "all" sees the views in another batch order
