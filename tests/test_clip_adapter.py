"""CLIP-Adapter (bridge/methods/clip_adapter.py): the adapter's formula, its torch.nn.Linear initialisation,
the width taken from the task, Dassl's warm-up + cosine schedule, and validation-only epoch selection."""
from __future__ import annotations

import torch

import clipbridge.bridge.methods  # noqa: F401  (registers every method)
from clipbridge.bridge.methods.clip_adapter import adapter_features, initial_adapter
from clipbridge.bridge.ops import accuracy
from clipbridge.bridge.registry import REGISTRY
from clipbridge.bridge.text import class_text
from clipbridge.bridge.training import warmup_cosine_per_epoch
from synthetic_tasks import make_task

F64 = torch.float64


def test_adapter_is_the_bottleneck_of_two_bias_free_linear_layers_with_residual_ratio():
    g = torch.Generator().manual_seed(0)
    f = 3 * torch.randn(2, 5, 12, generator=g, dtype=F64)
    params = initial_adapter((1, 2), 12, 3, F64, torch.device("cpu"))
    for s in range(2):
        down, up = torch.nn.Linear(12, 3, bias=False).double(), torch.nn.Linear(3, 12, bias=False).double()
        down.weight.data, up.weight.data = params["w1"][s].T.clone(), params["w2"][s].T.clone()
        x = 0.2 * torch.relu(up(torch.relu(down(f[s])))) + 0.8 * f[s]
        torch.testing.assert_close(adapter_features(f, params["w1"], params["w2"], 0.2)[s],
                                   x / x.norm(dim=-1, keepdim=True))


def test_initial_weights_follow_torch_linear_default_range_and_depend_on_the_seed_only():
    a = initial_adapter((1, 2), 64, 16, torch.float32, torch.device("cpu"))
    b = initial_adapter((2, 7), 64, 16, torch.float32, torch.device("cpu"))
    assert a["w1"].abs().max() <= 1 / 64 ** 0.5 and a["w2"].abs().max() <= 1 / 16 ** 0.5
    assert a["w1"].abs().max() > 0.9 / 64 ** 0.5                      # uniform over the whole range
    assert torch.equal(a["w1"][1], b["w1"][0]) and not torch.equal(a["w1"][0], a["w1"][1])


def test_width_and_hidden_size_come_from_the_task():
    task, test_x, _ = make_task(seeds=(1,), dim=24, width=30)
    state = REGISTRY["clip-adapter"].fit(task, epochs=1, reduction=3)
    assert state.tensors["w1"].shape == (1, 24, 8) and state.tensors["w2"].shape == (1, 8, 24)
    assert REGISTRY["clip-adapter"].logits(state, test_x).shape == (1, len(test_x), task.num_classes)


def test_schedule_is_one_constant_warm_up_epoch_then_dassl_cosine_stepped_per_epoch():
    rate = warmup_cosine_per_epoch(0.002, 200, steps_per_epoch=3, warmup_epochs=1, warmup_lr=1e-5)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.002)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 200.0)   # Dassl's successor, recounted after warm-up
    assert [rate(i) for i in range(3)] == [1e-5] * 3
    for epoch in range(1, 200):
        for step in range(3 * epoch, 3 * epoch + 3):
            assert abs(rate(step) - cosine.get_last_lr()[0]) < 1e-12, (epoch, step)
        opt.step()
        cosine.step()


def test_sgd_with_dassl_defaults_trains_and_keeps_the_best_validation_epoch_or_the_last():
    task, test_x, test_y = make_task(seeds=(1, 2), shots=8, views=2, val_per_class=4)
    best = REGISTRY["clip-adapter"].fit(task, epochs=15, lr=0.05)
    curves = torch.tensor(best.info["train_val_accuracy"])                              # [S, epochs + 1]
    assert [h["epoch"] for h in best.hparams] == [int(torch.argmax(c)) for c in curves]
    assert best.info["val_accuracy"] == curves.max(1).values.tolist()
    last = REGISTRY["clip-adapter"].fit(task, epochs=15, lr=0.05, select="last")
    assert [h["epoch"] for h in last.hparams] == [15, 15]
    torch.testing.assert_close(torch.tensor(last.info["train_val_accuracy"]), curves)
    untrained = REGISTRY["clip-adapter"].fit(task, epochs=0)
    assert not torch.equal(last.tensors["w1"], untrained.tensors["w1"])


def test_validation_is_all_that_selects_the_epoch():
    task, _, _ = make_task(seeds=(1,), shots=8, val_per_class=4)
    m = REGISTRY["clip-adapter"]
    state = m.fit(task, epochs=6, lr=0.05)
    text = class_text(task).projected
    val = task.val.expand(1, -1, -1)
    kept = adapter_features(val, state.tensors["w1"], state.tensors["w2"], 0.2)
    recomputed = accuracy(100 * kept @ text.T, task.val_labels)
    assert float(recomputed[0]) == state.info["val_accuracy"][0]
