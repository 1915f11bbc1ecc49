"""APE and APE-T (bridge/methods/ape): channel refinement, divergence, logits and the official grid checked
against brute-force computations; APE-T's residual, value weights and validation-only epoch choice."""
from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch

import clipbridge.bridge.methods  # noqa: F401  (registers every method)
from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.features import shot_keys, validation
from clipbridge.bridge.methods.ape.cache import CacheModel
from clipbridge.bridge.methods.ape.channels import channel_count, channel_criterion, select_channels
from clipbridge.bridge.methods.ape.search import grid_search, official_axes, official_axis
from clipbridge.bridge.methods.ape.trained import adapted_cache, frozen_terms, training_logits
from clipbridge.bridge.methods.ape.training_free import ape_cache
from clipbridge.bridge.ops import accuracy
from clipbridge.bridge.registry import REGISTRY
from clipbridge.bridge.text import class_text
from synthetic_tasks import make_task

F64 = torch.float64


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def brute_force_criterion(text, keys, mask, w0, w1):
    """The official definition, literally: mean over every pair of items of different classes."""
    c, d = text.shape
    items = [[text[i]] + [keys[i * (keys.shape[0] // c) + j] for j in range(keys.shape[0] // c)
                          if mask[i * (keys.shape[0] // c) + j]] for i in range(c)]
    total, count = torch.zeros(d, dtype=F64), 0
    for i, j in itertools.product(range(c), repeat=2):
        if i != j:
            for a, b in itertools.product(items[i], items[j]):
                total += a * b
                count += 1
    var = ((text - text.mean(0)) ** 2).sum(0) / (c - 1)
    return -w0 * total / count + w1 * var


def test_channel_criterion_equals_the_pairwise_loop_and_skips_padded_keys():
    g = torch.Generator().manual_seed(0)
    text, keys = unit(torch.randn(4, 9, generator=g, dtype=F64)), unit(torch.randn(12, 9, generator=g, dtype=F64))
    mask = torch.ones(12, dtype=torch.bool)
    mask[[5, 10, 11]] = False                                   # class 1 has 2 shots, class 3 has 1
    noisy = keys.clone()
    noisy[~mask] = 100.0
    ours = channel_criterion(text, noisy.unsqueeze(0), mask, 0.3, 0.7)[0]
    torch.testing.assert_close(ours, brute_force_criterion(text, keys, mask, 0.3, 0.7), rtol=1e-12, atol=1e-14)
    kept = select_channels(ours.unsqueeze(0), 4)[0]
    assert kept.tolist() == torch.argsort(ours, descending=True)[:4].tolist()


def test_channel_criterion_is_computed_in_float64_so_float32_keeps_the_same_channels():
    task, _, _ = make_task(seeds=(1, 2), shots=4)
    text = class_text(task, torch.float32).projected
    keys = shot_keys(task, torch.float32)
    wide = task.to(dtype=F64)
    a = channel_criterion(text, keys.x, keys.mask, 0.5, 0.5)
    b = channel_criterion(class_text(wide, F64).projected, shot_keys(wide, F64).x, keys.mask, 0.5, 0.5)
    assert a.dtype == F64
    assert torch.equal(select_channels(a, 8), select_channels(b, 8))


def test_k_is_the_same_fraction_of_any_width_and_an_explicit_k_overrides_it():
    assert channel_count(1024, 0, 800 / 1024, "ape") == 800          # the official RN50 value, exactly
    assert channel_count(512, 0, 700 / 1024, "ape") == 350           # ViT-B/16: the same fraction
    assert channel_count(768, 0, 700 / 1024, "ape") == 525
    assert channel_count(96, 37, 0.5, "ape") == 37
    with pytest.raises(BridgeInputError, match="only 96"):
        channel_count(96, 97, 0.5, "ape")
    with pytest.raises(BridgeInputError, match="k_fraction"):
        channel_count(96, 0, 0.0, "ape")


def test_key_divergence_and_logits_match_a_direct_computation_with_padded_shots_and_views():
    task, test_x, _ = make_task(seeds=(1, 2), shots=3, views=2, missing={2: 1}, dtype=F64)
    state = REGISTRY["ape"].fit(task, k=9)
    text = class_text(task, F64).projected
    q = unit(test_x)
    for s in range(2):
        kept = state.tensors["channels"][s]
        mean = task.support[s].reshape(task.num_classes, 3, 2, -1).mean(2)          # [C, K, D] (class 2: pads)
        logits = 100 * q @ text.T
        refined_q = unit(q[:, kept])
        t_kept = unit(text[:, kept])
        hp = state.hparams[s]
        for c in range(task.num_classes):
            for j in range(3 if c != 2 else 1):
                key = unit(unit(mean[c, j])[kept])
                p = torch.softmax(key @ t_kept.T, -1)[c]
                d = torch.log2((1 + 1e-6) / (p + 1e-6))
                torch.testing.assert_close(state.tensors["divergence"][s, c * 3 + j], d)
                logits[:, c] += hp["alpha"] * torch.exp(-hp["beta"] * (1 - refined_q @ key)) \
                    * torch.exp(hp["gamma"] * d)
        torch.testing.assert_close(REGISTRY["ape"].logits(state, test_x)[s], logits, rtol=1e-10, atol=1e-10)
    assert state.tensors["divergence"][:, 2 * 3 + 1:2 * 3 + 3].abs().max() == 0     # padded keys: no weight


def assert_brute_force_grid_choice(model, val_q, val_y, axes, choice):
    """choice (grid_search's) is, for every seed, the first strict maximum of the official loop over the axes
    (β outer, γ inner) scoring each candidate's logits on every validation query and class."""
    seeds, dtype = val_q.shape[0], val_q.dtype
    for s in range(seeds):
        best, best_acc = None, 0.0
        for beta, alpha, gamma in itertools.product(*axes):
            one = lambda v: torch.full((seeds,), v, dtype=dtype)  # noqa: E731
            acc = float(accuracy(model.logits(val_q, one(beta), one(alpha), one(gamma)), val_y)[s])
            if acc > best_acc:
                best, best_acc = (beta, alpha, gamma), acc
        assert choice.best[s].tolist() == pytest.approx(best, rel=0, abs=1e-6)
        assert float(choice.val_accuracy[s]) == pytest.approx(best_acc, rel=1e-6)


def test_official_grid_search_keeps_the_first_strict_maximum_of_a_brute_force_loop():
    task, _, _ = make_task(seeds=(1, 2), classes=6, shots=4, val_per_class=3, dtype=F64)
    text, keys = class_text(task, F64).projected, shot_keys(task, F64)
    model = ape_cache(text, keys.x, keys.mask, 10, 0.5, 0.5, torch.tensor(100.0, dtype=F64))
    hp = {"beta_scale": 7, "alpha_scale": 7, "gamma_scale": 1, "beta_steps": 8, "alpha_steps": 6, "gamma_steps": 4}
    axes = official_axes(hp, with_gamma=True)
    val_q, val_y = validation(task, F64)
    choice = grid_search(model, val_q, val_y, axes)
    assert_brute_force_grid_choice(model, val_q, val_y, axes, choice)
    assert choice.evaluated == 8 * 6 * 4


@pytest.mark.parametrize("classes,screened", [(100, True), (99, False)])
def test_official_grid_is_screened_from_100_classes_on_small_validation_and_keeps_the_brute_force_choice(
        monkeypatch, classes, screened):
    """C = 100-200 with a few hundred validation queries (Caltech101, Cars): far below SCREEN_PAIRS per chunk, yet
    the official grid is counted by the screen and the open-query bound (cache_search.GRID_SCREEN_CLASSES); below
    100 classes it is not. Either way the choice is the official loop's."""
    import clipbridge.bridge.cache_suspects as cache_suspects

    task, _, _ = make_task(seeds=(1, 2), classes=classes, shots=2, val_per_class=1, dim=24, width=24,
                           text_noise=4.0, image_noise=2.0)
    text, keys = class_text(task, torch.float32).projected, shot_keys(task, torch.float32)
    model = ape_cache(text, keys.x, keys.mask, 16, 0.5, 0.5, torch.tensor(100.0))
    hp = {"beta_scale": 7, "alpha_scale": 7, "gamma_scale": 1, "beta_steps": 6, "alpha_steps": 5, "gamma_steps": 3}
    axes = official_axes(hp, with_gamma=True)
    val_q, val_y = validation(task, torch.float32)
    calls = []
    real = cache_suspects.open_counts
    monkeypatch.setattr(cache_suspects, "open_counts", lambda *a, **k: calls.append(1) or real(*a, **k))
    choice = grid_search(model, val_q, val_y, axes)
    assert bool(calls) == screened
    assert_brute_force_grid_choice(model, val_q, val_y, axes, choice)


def test_affinities_too_large_to_keep_are_computed_slice_by_slice_with_the_same_values_and_choices(monkeypatch):
    """ImageNet's 50,000 validation queries: APE's search no longer computes the whole [S, Nv, C·K] affinity first
    (9.6 GB at 3 seeds and 16,000 keys) where bridge.cache_search would not keep it, but each (seed, rows) slice
    when asked: the values of the whole tensor's slices (padded rows included), and both searches choose the same
    (β, α, γ) either way."""
    import clipbridge.bridge.cache_search as cache_search
    import clipbridge.bridge.methods.ape.search as ape_search

    task, _, _ = make_task(seeds=(1, 2), classes=6, shots=4, val_per_class=5)
    text, keys = class_text(task, torch.float32).projected, shot_keys(task, torch.float32)
    model = ape_cache(text, keys.x, keys.mask, 10, 0.5, 0.5, torch.tensor(100.0))
    val_q, val_y = validation(task, torch.float32)
    valid = val_y >= 0
    valid[1, :3] = False                                                         # padded rows stay zero
    whole = model.affinity(val_q, valid)
    monkeypatch.setattr(cache_search, "KEEP_AFFINITY_BYTES", 0)
    sliced = ape_search.validation_affinity(model, val_q, valid)
    for s in range(2):
        for rows in (slice(0, 7), slice(7, val_q.shape[1])):
            assert torch.allclose(sliced(s, rows), whole[s, rows], rtol=0, atol=1e-6)
    hp = {"beta_scale": 7, "alpha_scale": 7, "gamma_scale": 1, "beta_steps": 6, "alpha_steps": 5, "gamma_steps": 3}
    fits = []
    for budget in (0, 1 << 31):
        monkeypatch.setattr(cache_search, "KEEP_AFFINITY_BYTES", budget)
        fits.append([REGISTRY["ape"].fit(task, search=mode, **hp).hparams for mode in ("grid", "batched")])
    assert fits[0] == fits[1]


def test_official_axes_are_the_published_lists_bit_for_bit():
    betas = official_axis(7, 20, 0.1)
    assert betas[0] == 0.1 and betas[6] == 2.1700000000000004      # the official code's float (ape_small.npz)
    assert official_axis(7, 10, 0.1)[9] == 6.31 and official_axis(1, 5, 0.0) == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert len(official_axis(7, 200, 0.1)) == 200 and max(official_axis(7, 200, 0.1)) < 7


def test_ape_on_every_channel_with_gamma_zero_is_tip_adapter_at_the_same_alpha_beta():
    task, test_x, _ = make_task(seeds=(1, 2), shots=4, views=2, dtype=F64)
    state = REGISTRY["ape"].fit(task, k_fraction=1.0, search="grid", gamma_steps=1, beta_steps=10, alpha_steps=10)
    assert [h["gamma"] for h in state.hparams] == [0.0, 0.0]
    keys = shot_keys(task, F64).x
    q = unit(test_x)
    text = class_text(task, F64).projected
    for s, hp in enumerate(state.hparams):
        cache = torch.exp(-hp["beta"] * (1 - q @ keys[s].T)).reshape(len(q), task.num_classes, 4).sum(-1)
        torch.testing.assert_close(REGISTRY["ape"].logits(state, test_x)[s], 100 * q @ text.T + hp["alpha"] * cache)


def test_batched_search_stays_in_the_official_box_and_grid_search_on_its_points():
    task, _, _ = make_task(seeds=(1, 2, 3), shots=4)
    hp = {"beta_scale": 5.0, "alpha_scale": 3.0, "gamma_scale": 0.5}
    batched = REGISTRY["ape"].fit(task, **hp)
    for h in batched.hparams:
        assert 0.1 <= h["beta"] <= 5.0 and 0.1 <= h["alpha"] <= 3.0 and 0.0 <= h["gamma"] <= 0.5
    grid = REGISTRY["ape"].fit(task, search="grid", beta_steps=20, alpha_steps=10, gamma_steps=5, **hp)
    axes = official_axes({**grid.hparams[0], **hp}, with_gamma=True)
    for h in grid.hparams:
        assert min(abs(h["beta"] - b) for b in axes[0]) < 1e-6 and min(abs(h["gamma"] - g) for g in axes[2]) < 1e-6
    with pytest.raises(BridgeInputError, match="search must be one of"):
        REGISTRY["ape"].fit(task, search="tpe")


def test_search_grid_records_the_grid_size_and_batched_search_its_candidates():
    task, _, _ = make_task(seeds=(1,), shots=2)
    grid = REGISTRY["ape"].fit(task, search="grid", beta_steps=4, alpha_steps=3, gamma_steps=2)
    assert grid.info["search_evaluated"] == 24
    batched = REGISTRY["ape"].fit(task, grid_points=3, search_rounds=2, search_per_round=16)
    assert batched.info["search_evaluated"] == 27 + 2 * 16


# ---------------------------------------------------------------- APE-T


def test_ape_t_residual_lives_on_the_kept_channels_of_text_and_keys_and_training_logits_equal_the_adapted_cache():
    task, _, _ = make_task(seeds=(1, 2), shots=3, dtype=F64)
    text, keys = class_text(task, F64).projected, shot_keys(task, F64)
    g = torch.Generator().manual_seed(0)
    channels = torch.stack([torch.randperm(task.dim, generator=g)[:5] for _ in range(2)])
    residual = torch.randn(2, task.num_classes, 5, generator=g, dtype=F64)
    v = torch.rand(2, task.num_classes * 3, generator=g, dtype=F64)
    model = adapted_cache(text, keys.x, keys.mask.to(F64), channels, residual, v, torch.tensor(100.0, dtype=F64))
    for s in range(2):
        other = torch.ones(task.dim, dtype=torch.bool)
        other[channels[s]] = False
        torch.testing.assert_close(model.text[s][:, other], text[:, other], rtol=0, atol=0)
        torch.testing.assert_close(model.text[s][:, channels[s]], text[:, channels[s]] + residual[s])
        for i in range(task.num_classes * 3):
            torch.testing.assert_close(model.keys[s, i, channels[s]], keys.x[s, i, channels[s]] + residual[s, i // 3])
            torch.testing.assert_close(model.keys[s, i, other], keys.x[s, i, other], rtol=0, atol=0)
    assert torch.equal(model.weight, v) and model.channels is None
    x = unit(torch.randn(2, 7, task.dim, generator=g, dtype=F64))
    beta, alpha, tau = torch.tensor([1.0, 2.5], dtype=F64), torch.tensor([3.0, 0.5], dtype=F64), model.logit_scale
    terms = frozen_terms(x, text, keys.x, channels, beta, tau)
    fast = training_logits(terms, residual, v, keys.mask.to(F64), beta, alpha, tau)
    torch.testing.assert_close(fast, model.logits(x, beta, alpha, torch.zeros(2, dtype=F64)))


def test_ape_t_with_zero_epochs_is_the_cache_of_every_channel_without_gamma():
    task, test_x, _ = make_task(seeds=(1, 2), shots=4, dtype=F64)
    state = REGISTRY["ape-t"].fit(task, epochs=0)
    keys, text, q = shot_keys(task, F64).x, class_text(task, F64).projected, unit(test_x)
    assert [h["epoch"] for h in state.hparams] == [0, 0] and "gamma" not in state.hparams[0]
    for s, hp in enumerate(state.hparams):
        cache = torch.exp(-hp["beta"] * (1 - q @ keys[s].T)).reshape(len(q), task.num_classes, 4).sum(-1)
        torch.testing.assert_close(REGISTRY["ape-t"].logits(state, test_x)[s], 100 * q @ text.T + hp["alpha"] * cache)


def test_ape_t_keeps_the_epoch_with_best_validation_accuracy_recomputed_from_the_kept_parameters():
    task, _, _ = make_task(seeds=(1, 2), shots=4, views=3)
    hp = {"epochs": 12, "lr": 1e-2, "batch_size": 16, "init_alpha": 5.0}
    state = REGISTRY["ape-t"].fit(task, **hp)
    curves = torch.tensor(state.info["train_val_accuracy"])                             # [S, epochs + 1]
    chosen = [h["epoch"] for h in state.hparams]
    assert chosen == [int(torch.argmax(c)) for c in curves]                              # first maximum
    assert any(e != 12 and curves[s, e] > curves[s, -1] for s, e in enumerate(chosen))
    val_q, val_y = validation(task, torch.float32)
    kept = replace(CacheModel.from_tensors(state.tensors), channels=None)
    init = torch.full((2,), 5.0), torch.full((2,), 1.0)
    recomputed = accuracy(kept.logits(val_q, init[1], init[0], torch.zeros(2)), val_y)
    torch.testing.assert_close(recomputed, curves[torch.arange(2), torch.tensor(chosen)])
    last = REGISTRY["ape-t"].fit(task, **hp, select="last")
    assert [h["epoch"] for h in last.hparams] == [12, 12]
    torch.testing.assert_close(torch.tensor(last.info["train_val_accuracy"]), curves)


def test_ape_t_with_validation_that_training_hurts_keeps_the_untrained_cache():
    task, _, _ = make_task(seeds=(1, 2), shots=4)
    misleading = replace(task, val_labels=(task.val_labels + 1) % task.num_classes)
    state = REGISTRY["ape-t"].fit(misleading, epochs=8, lr=1e-2, init_alpha=5.0)
    curves = torch.tensor(state.info["train_val_accuracy"])
    assert (curves[:, -1] < curves[:, 0]).any()
    assert [h["epoch"] for h in state.hparams] == [0, 0]
    torch.testing.assert_close(state.tensors["keys"], shot_keys(task, torch.float32).x)


# ---------------------------------------------------------------- all three


@pytest.fixture(scope="module")
def structured():
    """16 shots of 10 classes whose images carry class information the text lacks."""
    return make_task(seeds=(1, 2), classes=10, shots=16, views=2, dim=32, width=40, val_per_class=4)


@pytest.mark.parametrize("name", ["ape", "ape-t", "clip-adapter"])
def test_beats_zero_shot_by_ten_points_at_sixteen_shots_on_a_task_with_class_structure(name, structured):
    task, test_x, test_y = structured
    zs = REGISTRY["zeroshot"]
    zero = accuracy(zs.logits(zs.fit(task), test_x), test_y)
    m = REGISTRY[name]
    acc = accuracy(m.logits(m.fit(task), test_x), test_y)
    assert (acc >= zero + 10).all(), f"{name} {acc.tolist()} vs zero-shot {zero.tolist()}"
