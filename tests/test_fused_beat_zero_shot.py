"""Every method that fuses zero-shot logits with a few-shot term needs that term on a task built so that
zero-shot is wrong on known classes: it must choose a positive weight for the few-shot term and beat zero-shot
by a stated margin.

The task: 6 classes whose images are well separated, and whose text prototypes are swapped in pairs for
classes 0 <-> 1 and 2 <-> 3 (each of those classes is described by the other's prompts). Zero-shot therefore
misclassifies those 4 classes: it gets at most 2/6 = 33.3 % (asserted), while a nearest-class-mean rule on the
support shots gets at least 90 % (asserted): a fused method that uses its few-shot term must reach zero-shot
+ MARGIN points; one whose few-shot weight is 0 is exactly zero-shot.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import clipbridge.bridge.methods  # noqa: F401  (registers every method)
from clipbridge.bridge.ops import accuracy
from clipbridge.bridge.registry import REGISTRY
from synthetic_tasks import make_task

MARGIN = 40.0          # percentage points over zero-shot (the task allows about 60)
SWAP = torch.tensor([1, 0, 3, 2, 4, 5])

# method -> (hyper-parameters keeping the fit short, the few-shot weight(s) of its chosen hyper-parameters)
FUSED = {
    "tip-adapter": ({}, ("alpha",)),
    "tip-adapter-f": ({"epochs": 5}, ("alpha",)),
    "ape": ({}, ("alpha",)),
    "ape-t": ({"epochs": 5}, ("alpha",)),
    "gda": ({}, ("alpha",)),
    "cmm": ({"steps": 60}, ("alpha",)),
    "semobridge": ({"search_rounds": 3, "search_per_round": 32}, ("lambda2", "lambda3")),
    "semobridge-t": ({"steps": 20, "warmup": 2, "search_rounds": 3, "search_per_round": 32}, ("lambda2", "lambda3")),
}


def swapped_task(text_weight: float = 0.1):
    """make_task's images (no modality gap, so the shots separate the classes) with CLIP-like text: prompt p
    of class c projects to n(text_weight·n(μ_SWAP(c) + noise) + h), h a direction shared by all classes, so
    zero-shot logits differ by about τ·text_weight between classes and point to the swapped class."""
    task, test_x, test_y = make_task(seeds=(1, 2), classes=6, shots=4, dim=16, width=20, val_per_class=6,
                                     test_per_class=30, image_noise=0.5, gap=0.0, generator_seed=7,
                                     dtype=torch.float64)
    g = torch.Generator().manual_seed(11)
    mu = torch.nn.functional.normalize(torch.stack([test_x[test_y == c].mean(0) for c in range(6)]), dim=-1)
    shared = torch.nn.functional.normalize(torch.randn(16, generator=g, dtype=torch.float64), dim=0)
    cls = SWAP[task.text_class]
    noise = 0.1 * torch.randn(len(cls), 16, generator=g, dtype=torch.float64)
    own = torch.nn.functional.normalize(mu[cls] + noise, dim=-1)
    projected = torch.nn.functional.normalize(text_weight * own + shared, dim=-1)
    eos = projected @ torch.linalg.pinv(task.text_projection)
    task = replace(task, text_projected=eos @ task.text_projection, text_eos=eos)
    return task, test_x, test_y


@pytest.fixture(scope="module")
def swapped():
    return swapped_task()


def test_the_swapped_task_has_the_stated_gap(swapped):
    task, test_x, test_y = swapped
    zs = REGISTRY["zeroshot"]
    zero = accuracy(zs.logits(zs.fit(task), test_x), test_y)
    assert (zero <= 100 * 2 / 6 + 1e-9).all()
    for s in range(task.num_seeds):                                       # nearest class mean of the shots
        means = torch.nn.functional.normalize(task.support[s].mean(1), dim=-1)
        hits = (torch.nn.functional.normalize(test_x, dim=-1) @ means.T).argmax(-1) == test_y
        assert 100 * hits.double().mean() >= 90


@pytest.mark.parametrize("name", sorted(FUSED))
def test_fused_method_chooses_its_few_shot_term_and_beats_zero_shot_by_the_margin(name, swapped):
    task, test_x, test_y = swapped
    hparams, weights = FUSED[name]
    zs = REGISTRY["zeroshot"]
    zero = accuracy(zs.logits(zs.fit(task), test_x), test_y)
    m = REGISTRY[name]
    state = m.fit(task, **hparams)
    for chosen in state.hparams:
        assert any(chosen[w] > 0 for w in weights), f"{name} chose {[chosen[w] for w in weights]}"
    acc = accuracy(m.logits(state, test_x), test_y)
    assert (acc >= zero + MARGIN).all(), f"{name} {acc.tolist()} vs zero-shot {zero.tolist()}"


def test_the_linear_probe_ignores_the_wrong_text_and_beats_zero_shot_by_the_margin(swapped):
    task, test_x, test_y = swapped
    zs = REGISTRY["zeroshot"]
    zero = accuracy(zs.logits(zs.fit(task), test_x), test_y)
    m = REGISTRY["linear-probe"]
    acc = accuracy(m.logits(m.fit(task), test_x), test_y)
    assert (acc >= zero + MARGIN).all(), f"linear-probe {acc.tolist()} vs zero-shot {zero.tolist()}"
