"""Per-class text tensors derived from the per-prompt cache (METHOD.md §1).

Every prompt of a class has equal weight (templates and CuPL sentences form one flat list):

    T̄_c = n( mean_p n(e_{c,p} Wt) )     [C, D]  zero-shot class prototype
    Ē_c = n( mean_p n(e_{c,p}) )        [C, W]  class prototype in EOS space
    ℓ   = mean_c ‖ mean_p e_{c,p} ‖     scalar  average EOS length

Ē and ℓ exist only when the task holds EOS features (None otherwise). With an affine text projection
t = e·Wt + b the projected prompts t already include b, so T̄ is unchanged; Ē and ℓ live in EOS space,
before the projection, and do not see b either.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from clipbridge.bridge.ops import normalize


class ClassText(NamedTuple):
    """projected [C, D] = T̄, eos [C, W] = Ē, eos_length = ℓ (a Python float); unpacks as (T̄, Ē, ℓ).
    eos and eos_length are None without EOS features."""

    projected: Tensor
    eos: Tensor | None
    eos_length: float | None


def class_mean(values: Tensor, classes: Tensor, num_classes: int) -> Tensor:
    """Mean of the rows of `values` [P, X] per class index `classes` [P] -> [C, X] (equal weight per row)."""
    sums = torch.zeros(num_classes, values.shape[-1], dtype=values.dtype, device=values.device)
    sums.index_add_(0, classes, values)
    counts = torch.bincount(classes, minlength=num_classes).clamp_min(1).to(values.dtype)
    return sums / counts.unsqueeze(-1)


def class_text_tensors(text_projected: Tensor, text_eos: Tensor | None, text_class: Tensor,
                       num_classes: int) -> ClassText:
    """T̄ [C, D], Ē [C, W], ℓ from per-prompt projected [P, D], EOS [P, W] features (or None) and classes [P]."""
    projected = normalize(class_mean(normalize(text_projected), text_class, num_classes))
    if text_eos is None:
        return ClassText(projected=projected, eos=None, eos_length=None)
    eos = normalize(class_mean(normalize(text_eos), text_class, num_classes))
    length = class_mean(text_eos, text_class, num_classes).norm(dim=-1).mean()
    return ClassText(projected=projected, eos=eos, eos_length=float(length))


def class_text(task, dtype: torch.dtype | None = None) -> ClassText:
    """ClassText of a bridge.task.FewShotTask, computed in `dtype` (default float64 for a float64 task,
    float32 otherwise)."""
    reference = task.text_projected if task.text_eos is None else task.text_eos
    dtype = dtype or (torch.float64 if reference.dtype == torch.float64 else torch.float32)
    eos = None if task.text_eos is None else task.text_eos.to(dtype)
    return class_text_tensors(task.text_projected.to(dtype), eos, task.text_class, task.num_classes)
