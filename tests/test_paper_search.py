"""Under `--recipe paper` Tip-Adapter, APE and GDA choose their fusion weights exactly as the official loops do
(the whole official grid, nothing else, first strict maximum of validation top-1 accuracy), and the trained
baselines choose among their trained epochs only (RECIPES.md §2.2-2.5)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import clipbridge.bridge.methods  # noqa: F401  (registers every method)
from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.methods.ape.cache import CacheModel
from clipbridge.bridge.recipes.resolve import resolve_recipe
from clipbridge.bridge.registry import REGISTRY
from clipbridge.bridge.search import batched_search
from clipbridge.bridge.text import class_text
from synthetic_tasks import make_task

# (generator seed, classes, shots, validation images per class): a few sizes; 2 per class gives many ties
CACHES = [(0, 4, 2, 2), (1, 6, 3, 3), (2, 3, 1, 2), (3, 5, 4, 6)]


def _n(x):
    return x / x.norm(dim=-1, keepdim=True)


def _task(gen, classes, shots, per_class, views=1):
    task, _, _ = make_task(seeds=(1, 2), classes=classes, shots=shots, views=views, val_per_class=per_class,
                           dtype=torch.float64, generator_seed=gen, text_noise=2.5)
    return task


def _official_loop(candidates, logits_of, labels):
    """The official search loops: best accuracy starts at 0, a candidate replaces the kept one only when its
    validation top-1 accuracy (torch's first maximum per query) is strictly higher."""
    best_acc, best = 0.0, candidates[0]
    for cand in candidates:
        acc = 100.0 * float((logits_of(*cand).argmax(-1) == labels).double().mean())
        if acc > best_acc:
            best_acc, best = acc, cand
    return best, best_acc


@pytest.mark.parametrize("gen, classes, shots, per_class", CACHES)
def test_paper_tip_adapter_choice_is_the_official_grid_loop(gen, classes, shots, per_class):
    task = _task(gen, classes, shots, per_class, views=2)
    hp = resolve_recipe("tip-adapter", "ucf101", shots).hparams               # box [0.1, 7) x [0.1, 3)
    state = REGISTRY["tip-adapter"].fit(task, **hp)
    text = class_text(task, torch.float64).projected
    betas = [i * (hp["beta_high"] - 0.1) / 200 + 0.1 for i in range(200)]
    alphas = [j * (hp["alpha_high"] - 0.1) / 20 + 0.1 for j in range(20)]
    assert state.info["search_evaluated"] == 4000
    for s in range(task.num_seeds):
        keys = _n(task.support[s].reshape(classes, shots, 2, -1).mean(2)).reshape(classes * shots, -1)
        values = torch.eye(classes, dtype=torch.float64).repeat_interleave(shots, 0)
        q, y = _n(task.val[s]), task.val_labels[s]
        affinity = q @ keys.T

        def logits(beta, alpha):
            return 100.0 * q @ text.T + ((-1) * (beta - beta * affinity)).exp() @ values * alpha

        (beta, alpha), acc = _official_loop([(b, a) for b in betas for a in alphas], logits, y)
        assert (state.hparams[s]["beta"], state.hparams[s]["alpha"]) == (beta, alpha)
        assert state.info["val_accuracy"][s] == pytest.approx(acc)


@pytest.mark.parametrize("gen, classes, shots, per_class", CACHES[:3])
def test_paper_ape_choice_is_the_official_grid_loop_with_the_datasets_gamma_steps(gen, classes, shots, per_class):
    hp = resolve_recipe("ape", "imagenet", shots).hparams
    assert (hp["search"], hp["gamma_steps"]) == ("grid", 5)
    task = _task(gen, classes, shots, per_class)
    state = REGISTRY["ape"].fit(task, **hp)
    model = CacheModel.from_tensors(state.tensors)
    betas = [i * (hp["beta_scale"] - 0.1) / 200 + 0.1 for i in range(200)]
    alphas = [j * (hp["alpha_scale"] - 0.1) / 20 + 0.1 for j in range(20)]
    gammas = [m * hp["gamma_scale"] / 5 for m in range(5)]
    q = _n(task.val)
    for s in range(task.num_seeds):
        one = CacheModel(model.text, model.keys[s:s + 1], model.weight[s:s + 1], model.divergence[s:s + 1],
                         model.channels[s:s + 1], model.logit_scale)
        cache = {b: None for b in betas}

        def logits(beta, alpha, gamma):
            key = (beta, gamma)
            if key not in cache:                      # the cache term does not depend on α
                zero = torch.zeros(1, dtype=torch.float64)
                cache[key] = (one.logits(q[s:s + 1], torch.tensor([beta]), zero, torch.tensor([gamma])),
                              one.logits(q[s:s + 1], torch.tensor([beta]), zero + 1, torch.tensor([gamma])))
            base, with_one = cache[key]
            return (base + alpha * (with_one - base))[0]

        (beta, alpha, gamma), acc = _official_loop([(b, a, g) for b in betas for a in alphas for g in gammas],
                                                   logits, task.val_labels[s])
        chosen = state.hparams[s]
        assert (chosen["beta"], chosen["alpha"], chosen["gamma"]) == (beta, alpha, gamma)
        assert state.info["val_accuracy"][s] == pytest.approx(acc)


@pytest.mark.parametrize("gen, classes, shots, per_class", CACHES)
def test_paper_gda_choice_is_the_official_alpha_loop_and_nothing_else(gen, classes, shots, per_class):
    task = _task(gen, classes, shots, per_class, views=3)
    hp = resolve_recipe("gda", "dtd", shots).hparams
    state = REGISTRY["gda"].fit(task, **hp)
    text = class_text(task, torch.float64).projected
    assert state.info["search_evaluated"] == 7
    for s in range(task.num_seeds):
        q, w, b = _n(task.val[s]), state.tensors["weight"][s], state.tensors["bias"][s]
        (alpha,), acc = _official_loop([(a,) for a in (1e-4, 1e-3, 1e-2, 0.1, 1, 10, 100)],
                                       lambda a: 100.0 * q @ text.T + a * (q @ w.T + b), task.val_labels[s])
        assert state.hparams[s]["alpha"] == alpha
        assert state.info["val_accuracy"][s] == pytest.approx(acc)


def test_a_batched_search_may_score_its_grid_alone():
    task = _task(0, 4, 2, 2)
    state = REGISTRY["gda"].fit(task, search_per_round=0)
    assert state.info["search_evaluated"] == 7
    for chosen in state.hparams:              # a grid point, through the search's log-scale unit cube
        assert any(chosen["alpha"] == pytest.approx(a, rel=1e-12) for a in (1e-4, 1e-3, 1e-2, 0.1, 1, 10, 100))
    with pytest.raises(BridgeInputError, match="per_round 0"):
        batched_search(lambda c: c.sum(-1), torch.zeros(1), torch.ones(1), num_seeds=1, rounds=2, per_round=0, seed=0)


def test_the_uniform_recipe_keeps_the_batched_search_and_records_which_ran():
    task = _task(0, 4, 2, 2)
    for method in ("tip-adapter", "gda", "ape"):
        uniform = REGISTRY[method].fit(task)
        assert uniform.hparams[0]["search"] == "batched"
        assert uniform.info["search_evaluated"] > (7 if method == "gda" else 121)
        paper = REGISTRY[method].fit(task, **resolve_recipe(method, "dtd", 2).hparams)
        assert paper.hparams[0]["search"] == "grid"


TRAINED = {"tip-adapter-f": {"epochs": 6, "batch_size": 4, "lr": 0.5, "init_alpha": 1.0},
           "ape-t": {"epochs": 6, "batch_size": 4, "lr": 0.05, "init_alpha": 1.0},
           "clip-adapter": {"epochs": 6, "batch_size": 4, "lr": 0.5, "warmup_epochs": 0}}


@pytest.fixture(scope="module")
def mislabelled():
    """Each class's support images are the next class's: training only moves away from validation, so the
    untrained start ("epoch 0") is the most accurate on validation."""
    task = _task(1, 6, 3, 3, views=2)
    return replace(task, support=task.support.roll(1, dims=1))


@pytest.mark.parametrize("method", list(TRAINED))
def test_paper_selection_never_keeps_the_untrained_epoch(method, mislabelled):
    """The official loops keep the first strict maximum of epochs 1..E, so even where the untrained start is
    the most accurate on validation a trained epoch is kept; `with-epoch-0` (the uniform default) keeps it."""
    hp = {**resolve_recipe(method, "dtd", 3).hparams, **TRAINED[method]}
    assert hp["select"] == "trained-epochs"
    state = REGISTRY[method].fit(mislabelled, **hp)
    curve = torch.tensor(state.info["train_val_accuracy"])                       # [S, epochs + 1]
    assert bool((curve[:, 0] > curve[:, 1:].amax(1)).any()) and bool((curve[:, 0] >= curve[:, 1:].amax(1)).all())
    for s, chosen in enumerate(state.hparams):
        assert chosen["select"] == "trained-epochs"
        assert chosen["epoch"] == 1 + int(curve[s, 1:].argmax())                # first maximum of 1..E
    with_zero = REGISTRY[method].fit(mislabelled, **{**hp, "select": "with-epoch-0"})
    assert [chosen["epoch"] for chosen in with_zero.hparams] == [0] * mislabelled.num_seeds


def test_clip_adapter_keeps_the_last_epoch_on_imagenet_under_the_paper_recipe():
    assert resolve_recipe("clip-adapter", "imagenet", 16).hparams["select"] == "last"
    assert resolve_recipe("clip-adapter", "dtd", 16).hparams["select"] == "trained-epochs"
