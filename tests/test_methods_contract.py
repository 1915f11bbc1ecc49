"""Every registered method honours the same contract (CONTRACT.md, bridge/registry.py):

shapes [S, N, C] for [N, D] and [S, N, D] queries; the S-seed batch equals S single-seed runs; float32 by
default, float64 on request; deterministic for fixed seeds; finite logits; fit reads nothing but the task
(no files, task unmodified); padded support views are ignored; user errors (zero vectors, NaN, unknown
hyper-parameters) are BridgeInputError, never a silent NaN.
"""
from __future__ import annotations

import builtins
import io
import os
from dataclasses import replace

import pytest
import torch

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.registry import REGISTRY, unmet_needs
from clipbridge.bridge.task import EOS, FewShotTask
import clipbridge.bridge.methods  # noqa: F401  (registers every method)
from synthetic_tasks import make_task, seed_slice

BASELINE_METHODS = {"zeroshot", "semobridge", "semobridge-t", "cmm", "tip-adapter", "tip-adapter-f", "gda",
                    "linear-probe", "ape", "ape-t", "clip-adapter"}
# Speed knobs, applied to the methods that have them (contract checks, not accuracy).
FAST = {"steps": 12, "warmup": 4, "epochs": 3, "search_rounds": 2, "search_per_round": 16}


def method(name: str):
    """The registered method `name`."""
    return REGISTRY[name]


def fit(m, task):
    return m.fit(task, **{k: v for k, v in FAST.items() if k in m.defaults})


ALL = pytest.mark.parametrize("name", sorted(REGISTRY))


def test_every_method_of_the_comparison_is_registered_by_importing_bridge_methods():
    assert BASELINE_METHODS <= set(REGISTRY), sorted(BASELINE_METHODS - set(REGISTRY))


@ALL
def test_logits_have_shape_seeds_queries_classes_and_info_is_complete(name):
    m = method(name)
    task, test_x, _ = make_task(seeds=(1, 2, 3), classes=4)
    state = fit(m, task)
    assert state.method == name
    assert len(state.hparams) == 3 and all(isinstance(h, dict) for h in state.hparams)
    for key in ("val_accuracy", "fit_seconds", "search_seconds"):
        assert key in state.info, key
    assert len(state.info["val_accuracy"]) == 3
    assert all(0.0 <= a <= 100.0 for a in state.info["val_accuracy"])
    assert state.info["fit_seconds"] >= state.info["search_seconds"] >= 0.0
    flat = m.logits(state, test_x)
    per_seed = m.logits(state, test_x.expand(3, -1, -1))
    assert flat.shape == per_seed.shape == (3, test_x.shape[0], 4)
    assert flat.dtype == torch.float32
    assert torch.isfinite(flat).all()
    assert torch.equal(flat, per_seed)


@ALL
def test_seed_batch_equals_single_seed_runs_in_float64(name):
    m = method(name)
    task, test_x, _ = make_task(seeds=(3, 5, 8), dtype=torch.float64)
    batched = fit(m, task)
    logits = m.logits(batched, test_x)
    for s in range(3):
        single = fit(m, seed_slice(task, s))
        assert single.hparams[0] == batched.hparams[s], f"seed index {s}"
        torch.testing.assert_close(m.logits(single, test_x)[0], logits[s], rtol=1e-9, atol=1e-9)


@ALL
def test_float64_task_gives_float64_logits(name):
    m = method(name)
    task, test_x, _ = make_task(seeds=(1,), dtype=torch.float64)
    logits = m.logits(fit(m, task), test_x)
    assert logits.dtype == torch.float64 and torch.isfinite(logits).all()


@ALL
def test_fit_is_deterministic_for_fixed_seeds(name):
    m = method(name)
    task, test_x, _ = make_task(seeds=(4, 7))
    a, b = fit(m, task), fit(m, task)
    assert a.hparams == b.hparams
    assert torch.equal(m.logits(a, test_x), m.logits(b, test_x))


@ALL
def test_fit_reads_no_file_and_leaves_the_task_unmodified(name, monkeypatch):
    m = method(name)
    task, test_x, _ = make_task(seeds=(1, 2))
    before = {k: v.clone() for k, v in vars(task).items() if isinstance(v, torch.Tensor)}

    def refuse(*args, **kwargs):
        raise AssertionError(f"{name} tried to open a file: {args[:1]}")

    for target, attr in ((builtins, "open"), (io, "open"), (os, "open")):
        monkeypatch.setattr(target, attr, refuse)
    state = fit(m, task)
    m.logits(state, test_x)
    monkeypatch.undo()
    for k, v in before.items():
        assert torch.equal(getattr(task, k), v), f"{name} modified task.{k}"


@ALL
def test_padded_views_of_a_class_with_fewer_images_are_ignored(name):
    m = method(name)
    task, test_x, _ = make_task(seeds=(1, 2), shots=4, views=2, missing={1: 2, 3: 1})
    noisy = task.support.clone()
    noisy[:, ~task.support_mask] = 1e3 * torch.randn(2, int((~task.support_mask).sum()), task.dim)
    a = m.logits(fit(m, task), test_x)
    b = m.logits(fit(m, replace(task, support=noisy)), test_x)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b)


@ALL
def test_duplicate_views_one_shot_shared_val_and_padded_val_rows_give_finite_logits(name):
    m = method(name)
    task, test_x, _ = make_task(seeds=(1, 2), shots=1, shared_val=True)
    dup = task.support.clone()
    dup[:, 2] = dup[:, 2, :1]                                  # class 2 = exact duplicates
    val = torch.cat([task.val, torch.zeros(1, 3, task.dim)], 1)  # three padding rows (zeros, label -1)
    labels = torch.cat([task.val_labels, torch.full((1, 3), -1)], 1)
    task = replace(task, support=dup, val=val, val_labels=labels)
    state = fit(m, task)
    assert torch.isfinite(m.logits(state, test_x)).all()
    assert all(0.0 <= a <= 100.0 for a in state.info["val_accuracy"])


@ALL
def test_zero_support_vector_is_a_clear_input_error(name):
    m = method(name)
    task, _, _ = make_task(seeds=(1,))
    support = task.support.clone()
    support[0, 1, 0] = 0.0
    if name == "zeroshot":          # documented: zero-shot never reads the support
        assert torch.equal(fit(m, replace(task, support=support)).tensors["text"], fit(m, task).tensors["text"])
        return
    with pytest.raises(BridgeInputError, match="zero"):
        fit(m, replace(task, support=support))


@ALL
def test_zero_or_nan_query_is_a_clear_input_error(name):
    m = method(name)
    task, test_x, _ = make_task(seeds=(1,))
    state = fit(m, task)
    zero, nan = test_x.clone(), test_x.clone()
    zero[3] = 0.0
    nan[5, 1] = float("nan")
    with pytest.raises(BridgeInputError, match="zero"):
        m.logits(state, zero)
    with pytest.raises(BridgeInputError, match="NaN"):
        m.logits(state, nan)


def test_nan_support_is_refused_when_the_task_is_built():
    task, _, _ = make_task(seeds=(1,))
    support = task.support.clone()
    support[0, 0, 0, 0] = float("nan")
    with pytest.raises(BridgeInputError, match="NaN"):
        FewShotTask(**{**vars(task), "support": support})


@ALL
def test_a_task_without_eos_features_is_refused_in_one_line_only_by_the_methods_that_need_them(name):
    m = method(name)
    task, test_x, _ = make_task(seeds=(1, 2))
    bare = replace(task, text_eos=None, text_projection=None)        # a CoCa/HF cache without EOS features
    assert bare.inputs == frozenset() and task.inputs == {EOS}
    if EOS in getattr(m, "needs", ()):
        with pytest.raises(BridgeInputError, match=f"^{name} needs the text encoder's pre-projection EOS") as info:
            fit(m, bare)
        assert "\n" not in str(info.value)
    else:       # runs, and never looked at the EOS features: the same logits with or without them
        torch.testing.assert_close(m.logits(fit(m, bare), test_x), m.logits(fit(m, task), test_x))


def test_semobridge_and_semobridge_t_are_the_methods_needing_eos_features():
    assert {name for name, m in REGISTRY.items() if EOS in getattr(m, "needs", ())} >= {"semobridge", "semobridge-t"}
    assert not unmet_needs(REGISTRY["semobridge"], {EOS}) and unmet_needs(REGISTRY["semobridge"], ()) == [EOS]
    assert unmet_needs(REGISTRY["zeroshot"], ()) == []


@ALL
def test_unknown_hyper_parameter_is_refused(name):
    m = method(name)
    task, _, _ = make_task(seeds=(1,))
    with pytest.raises(BridgeInputError, match="unknown hyper-parameter"):
        m.fit(task, no_such_knob=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@ALL
def test_cuda_task_gives_cuda_logits_equal_to_cpu_ones(name):
    m = method(name)
    task, test_x, _ = make_task(seeds=(1, 2), dtype=torch.float64)
    cpu = m.logits(fit(m, task), test_x)
    gpu = m.logits(fit(m, task.to("cuda")), test_x.to("cuda"))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-6, atol=1e-6)
