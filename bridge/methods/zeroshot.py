"""Zero-shot CLIP: logits = τ · q̄ T̄ᵀ (METHOD.md §5). Nothing is fitted; validation accuracy is reported.
It reads no support image (`reads_support = False`): its task may hold no support set, so a cache without
the few-shot images of the (shots, seed) pairs asked for still serves it (their validation draw is read)."""
from __future__ import annotations

import time

import torch
from torch import Tensor

from clipbridge.bridge.features import begin_fit, prepare_queries, validation
from clipbridge.bridge.ops import accuracy
from clipbridge.bridge.registry import FittedState, register_method


def zeroshot_logits(queries: Tensor, text: Tensor, logit_scale: float | Tensor) -> Tensor:
    """τ · q̄ T̄ᵀ: normalised queries [S, N, D], prototypes [C, D] or [S, C, D] -> [S, N, C]."""
    return logit_scale * queries @ text.transpose(-1, -2)


@register_method
class ZeroShot:
    name = "zeroshot"
    summary = "CLIP's zero-shot classifier: cosine to the class text prototypes"
    defaults: dict = {}
    reads_support = False

    def fit(self, task, **hparams) -> FittedState:
        _, start, dtype, text = begin_fit(self, task, hparams)
        val_q, val_y = validation(task, dtype)
        val_acc = accuracy(zeroshot_logits(val_q, text, task.logit_scale), val_y)
        tensors = {"text": text, "logit_scale": torch.tensor(task.logit_scale, dtype=dtype, device=text.device)}
        info = {"val_accuracy": val_acc.tolist(), "fit_seconds": time.perf_counter() - start, "search_seconds": 0.0}
        return FittedState(self.name, tensors, [{} for _ in task.seeds], info)

    def logits(self, state: FittedState, queries: Tensor) -> Tensor:
        text = state.tensors["text"]
        return zeroshot_logits(prepare_queries(queries, len(state.hparams), text), text,
                               state.tensors["logit_scale"])
