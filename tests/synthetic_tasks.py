"""Tensor-level factory of small FewShotTasks with class structure and a modality gap (no files).

Images of class c are  scale · (μ_c + σ·noise + g)  with unit class directions μ_c and a shared image-side
offset g; prompt p of class c projects to  n(μ'_c + ρ_p·noise) + h  where μ'_c is μ_c perturbed by
`text_noise` (so zero-shot is imperfect and support images carry information text lacks) and h is a
text-side offset (the modality gap). EOS features are exact preimages under Wt (W ≥ D), so e @ Wt equals
the projected text.

    task, test_x, test_y = make_task(seeds=(1, 2), classes=5, shots=4)
"""
from __future__ import annotations

import torch

from clipbridge.bridge.task import FewShotTask


def make_task(
    *,
    seeds: tuple[int, ...] = (1, 2),
    classes: int = 5,
    shots: int = 4,
    views: int = 1,
    dim: int = 16,
    width: int = 20,
    prompts: int = 2,
    val_per_class: int = 4,
    test_per_class: int = 40,
    image_noise: float = 1.0,
    text_noise: float = 1.5,
    gap: float = 0.8,
    scale: float = 7.0,
    logit_scale: float = 100.0,
    missing: dict[int, int] | None = None,
    shared_val: bool = False,
    dtype: torch.dtype = torch.float32,
    generator_seed: int = 0,
) -> tuple[FewShotTask, torch.Tensor, torch.Tensor]:
    """A FewShotTask (support differs per seed), plus test queries [Nt, D] and labels [Nt].

    missing     {class: number of real shots} for classes with fewer images than `shots` (padded, masked)
    shared_val  one validation set [1, Nv, D] for all seeds instead of one per seed
    """
    g = torch.Generator().manual_seed(generator_seed)
    randn = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    unit = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731

    mu = unit(randn(classes, dim))
    image_gap, text_gap = gap * unit(randn(dim)), gap * unit(randn(dim))

    def images(labels: torch.Tensor, v: int = 1) -> torch.Tensor:
        base = mu[labels] + image_noise * randn(*labels.shape, dim) / dim ** 0.5 + image_gap
        out = base.unsqueeze(-2) + 0.1 * image_noise * randn(*labels.shape, v, dim) / dim ** 0.5
        return scale * out  # [..., v, D]

    s = len(seeds)
    shot_labels = torch.arange(classes).repeat_interleave(shots).expand(s, -1)           # [S, C·K]
    support = images(shot_labels, views).reshape(s, classes, shots * views, dim)
    mask = torch.ones(classes, shots * views, dtype=torch.bool)
    for c, real in (missing or {}).items():
        mask[c, real * views:] = False
        support[:, c, real * views:] = 0.0

    mu_text = unit(mu + text_noise * randn(classes, dim) / dim ** 0.5)
    text_class = torch.arange(classes).repeat_interleave(prompts)
    projected = unit(mu_text[text_class] + 0.2 * randn(classes * prompts, dim) / dim ** 0.5) + text_gap
    wt = randn(width, dim) / width ** 0.5
    eos = projected @ torch.linalg.pinv(wt)
    projected = eos @ wt

    sv = 1 if shared_val else s
    val_y = torch.arange(classes).repeat_interleave(val_per_class).expand(sv, -1).clone()
    val = images(val_y)[..., 0, :]
    test_y = torch.arange(classes).repeat_interleave(test_per_class)
    test = images(test_y)[..., 0, :]

    task = FewShotTask(
        support=support.to(dtype), support_mask=mask, text_projected=projected.to(dtype),
        text_eos=eos.to(dtype), text_class=text_class, text_projection=wt.to(dtype),
        logit_scale=logit_scale, val=val.to(dtype), val_labels=val_y, views=views, seeds=tuple(seeds))
    return task, test.to(dtype), test_y


def seed_slice(task: FewShotTask, index: int) -> FewShotTask:
    """The single-seed task of seed number `index` of a batched task."""
    from dataclasses import replace

    sl = slice(index, index + 1)
    val_sl = sl if task.val.shape[0] > 1 else slice(0, 1)
    return replace(task, support=task.support[sl], val=task.val[val_sl], val_labels=task.val_labels[val_sl],
                   seeds=(task.seeds[index],))
