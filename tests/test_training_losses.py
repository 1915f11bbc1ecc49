"""Every trained baseline's loss equals an independent, literal computation of its published formula on a tiny
float64 case (as tests/test_parity.py does for SeMoBridge-T): CMM (METHOD.md §4: CE of the fused logits +
λ_tri · triplet hinge), Tip-Adapter-F (RECIPES.md §2.2), APE-T (RECIPES.md §2.3), CLIP-Adapter (RECIPES.md §2.5).

The loss is the closure each fit hands to bridge.training.train_and_select; a spy takes it (and stops the fit)
and the test evaluates it at parameters away from their initial values, where every term is active. The
reference is written here loop by loop from the formulas, with the published defaults as literals.
"""
from __future__ import annotations

import importlib

import pytest
import torch

import clipbridge.bridge.methods  # noqa: F401  (registers every method)
from clipbridge.bridge.registry import REGISTRY
from synthetic_tasks import make_task

F64 = torch.float64
TAU = 100.0


class _Stop(Exception):
    pass


def captured_training(monkeypatch, module: str, name: str, task, **hparams):
    """(init, loss, extra) of REGISTRY[name].fit(task): what it passed to train_and_select."""
    mod = importlib.import_module(f"clipbridge.{module}")
    seen = {}

    def spy(init, loss, val_accuracy, **kwargs):
        seen.update(init=init, loss=loss, kwargs=kwargs)
        raise _Stop

    monkeypatch.setattr(mod, "train_and_select", spy)
    with pytest.raises(_Stop):
        REGISTRY[name].fit(task, **hparams)
    return seen["init"], seen["loss"], seen


def n(x):
    return x / x.norm(dim=-1, keepdim=True)


def class_prototypes(task) -> torch.Tensor:
    """T̄_c = n(mean_p n(e_p Wt)) (METHOD.md §1), literally."""
    rows = []
    for c in range(task.num_classes):
        prompts = task.text_projected[task.text_class == c]
        rows.append(n(n(prompts).mean(0)))
    return torch.stack(rows)


def real_views(task, s):
    """[(raw view [D], class)] of seed s's real support views."""
    out = []
    for c in range(task.num_classes):
        for j in range(task.support.shape[2]):
            if task.support_mask[c, j]:
                out.append((task.support[s, c, j], c))
    return out


def shot_keys_literal(task, s):
    """[(key [D], class)] = n(mean of a real shot's raw views), class-major; padded shots left out."""
    v = task.views
    keys = []
    for c in range(task.num_classes):
        for k in range(task.support.shape[2] // v):
            if task.support_mask[c, k * v]:
                keys.append((n(task.support[s, c, k * v:(k + 1) * v].mean(0)), c))
    return keys


def ce(logits: torch.Tensor, y: int) -> torch.Tensor:
    return torch.logsumexp(logits, 0) - logits[y]


@pytest.fixture(scope="module")
def task():
    return make_task(seeds=(1, 2), classes=4, shots=3, dim=8, width=10, missing={2: 2}, dtype=F64)[0]


def test_cmm_loss_is_cross_entropy_of_the_fused_logits_plus_the_triplet_hinge(task, monkeypatch):
    init, loss, _ = captured_training(monkeypatch, "bridge.methods.cmm", "cmm", task)
    g = torch.Generator().manual_seed(3)
    params = {"delta": init["delta"] + 0.4 * torch.randn(init["delta"].shape, generator=g, dtype=F64),
              "protos": init["protos"] + 0.3 * torch.randn(init["protos"].shape, generator=g, dtype=F64)}
    got = loss(params, 0)
    text = class_prototypes(task)
    margin, weight, alpha = 0.2, 1.0, 1.0                      # METHOD.md §4 defaults
    active = inactive = 0
    for s in range(2):
        total, count = 0.0, 0
        protos = n(params["protos"][s])
        for f, y in real_views(task, s):
            v = n(f)
            mapped = n(v + v @ params["delta"][s])                           # v' = n(v (I + Δ))
            logits = TAU * v @ text.T + alpha * TAU * mapped @ protos.T
            dist = [1 - float(mapped @ protos[j]) for j in range(task.num_classes)]
            hardest = min(d for j, d in enumerate(dist) if j != y)
            hinge = max(0.0, margin + dist[y] - hardest)
            active, inactive = active + (hinge > 0), inactive + (hinge == 0)
            total += float(ce(logits, y)) + weight * hinge
            count += 1
        assert float(got[s]) == pytest.approx(total / count, rel=1e-10)
    assert active and inactive                                  # both sides of the hinge are exercised


def test_cmm_triplet_term_alone_is_the_hinge_with_margin_0_2(task, monkeypatch):
    """The CE part is pinned above; with only the hinge left (huge margin: every hinge active), the loss
    difference between two margins is exactly the margin difference, and the hinge grows with d(v', T_y)."""
    init, loss_a, _ = captured_training(monkeypatch, "bridge.methods.cmm", "cmm", task, margin=5.0)
    _, loss_b, _ = captured_training(monkeypatch, "bridge.methods.cmm", "cmm", task, margin=6.0)
    torch.testing.assert_close(loss_b(init, 0) - loss_a(init, 0), torch.ones(2, dtype=F64))


def test_tip_adapter_f_loss_is_cross_entropy_of_zero_shot_plus_the_trainable_cache(task, monkeypatch):
    init, loss, seen = captured_training(monkeypatch, "bridge.methods.tip_adapter_f", "tip-adapter-f", task)
    g = torch.Generator().manual_seed(4)
    keys = init["keys"] + 0.2 * torch.randn(init["keys"].shape, generator=g, dtype=F64)   # not re-normalised
    got = loss({"keys": keys}, 0)
    text = class_prototypes(task)
    alpha, beta = 1.0, 1.0                                       # defaults init_alpha, init_beta
    for s in range(2):
        literal_keys = shot_keys_literal(task, s)
        shots = task.support.shape[2] // task.views
        trained = [(keys[s, c * shots + k], c) for c in range(task.num_classes) for k in range(shots)
                   if task.support_mask[c, k * task.views]]
        initial = [init["keys"][s, c * shots + k] for c in range(task.num_classes) for k in range(shots)
                   if task.support_mask[c, k * task.views]]
        assert len(initial) == len(literal_keys)
        for start, (key0, _) in zip(initial, literal_keys):                      # init = Tip-Adapter's keys
            torch.testing.assert_close(start, key0)
        total, count = 0.0, 0
        for f, y in real_views(task, s):
            q = n(f)
            cache = torch.zeros(task.num_classes, dtype=F64)
            for key, c in trained:
                cache[c] += torch.exp(-beta * (1 - q @ key))
            total += float(ce(TAU * q @ text.T + alpha * cache, y))
            count += 1
        assert float(got[s]) == pytest.approx(total / count, rel=1e-10)


def test_ape_t_loss_is_cross_entropy_with_the_residual_on_kept_channels_and_value_weights(task, monkeypatch):
    trained_module = importlib.import_module("clipbridge.bridge.methods.ape.trained")
    picked = {}
    real_select = trained_module.select_channels

    def remember(criterion, k):
        picked["channels"] = real_select(criterion, k)
        return picked["channels"]

    monkeypatch.setattr(trained_module, "select_channels", remember)
    init, loss, _ = captured_training(monkeypatch, "bridge.methods.ape.trained", "ape-t", task)
    channels = picked["channels"]
    assert channels.shape == (2, round(0.78125 * task.dim))      # k = 800/1024 of the width
    g = torch.Generator().manual_seed(5)
    residual = 0.3 * torch.randn(init["residual"].shape, generator=g, dtype=F64)
    values = init["value_weights"] + 0.5 * torch.rand(init["value_weights"].shape, generator=g, dtype=F64)
    got = loss({"residual": residual, "value_weights": values}, 0)
    text = class_prototypes(task)
    alpha, beta = 2.0, 1.0                                       # APE-T defaults init α 2, init β 1
    shots = task.support.shape[2] // task.views
    for s in range(2):
        shifted_text = text.clone()
        shifted_text[:, channels[s]] += residual[s]
        terms = []
        for c in range(task.num_classes):
            for k in range(shots):
                if task.support_mask[c, k * task.views]:
                    key = n(task.support[s, c, k * task.views:(k + 1) * task.views].mean(0)).clone()
                    key[channels[s]] += residual[s, c]
                    terms.append((key, c, values[s, c * shots + k]))
        total, count = 0.0, 0
        for f, y in real_views(task, s):
            q = n(f)
            logits = TAU * q @ shifted_text.T
            cache = torch.zeros(task.num_classes, dtype=F64)
            for key, c, v in terms:
                cache[c] += torch.exp(-beta * (1 - q @ key)) * v
            total += float(ce(logits + alpha * cache, y))
            count += 1
        assert float(got[s]) == pytest.approx(total / count, rel=1e-10)


def test_clip_adapter_loss_is_cross_entropy_of_the_residual_adapter_against_the_class_text(task, monkeypatch):
    init, loss, _ = captured_training(monkeypatch, "bridge.methods.clip_adapter", "clip-adapter", task)
    got = loss(init, 0)
    text = class_prototypes(task)
    ratio = 0.2
    for s in range(2):
        w1, w2 = init["w1"][s], init["w2"][s]
        assert w1.shape == (task.dim, task.dim // 4)            # reduction 4
        total, count = 0.0, 0
        for f, y in real_views(task, s):
            x = ratio * torch.relu(torch.relu(f @ w1) @ w2) + (1 - ratio) * f
            total += float(ce(TAU * n(x) @ text.T, y))
            count += 1
        assert float(got[s]) == pytest.approx(total / count, rel=1e-10)
