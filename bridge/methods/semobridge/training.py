"""SeMoBridge-T's training loop (METHOD.md §3) for S seeds at once, with per-step model selection.

Parameters carry a leading seed dim: bridge B [S, D, W], class bias b [S, C, W]. The gradient is that of
the seeds' summed losses; the loss of seed s depends only on B[s], b[s], and AdamW is elementwise
(moments, bias correction, decoupled weight decay), so one torch.optim.AdamW over [S, ...] tensors is
exactly S independent AdamWs (tests/test_semobridge_t.py checks S=3 against three runs of S=1).

Each step is one hand-derived forward and backward pass (bridge.methods.semobridge.loss.loss_forward /
loss_backward; no autograd graph), whose [S, N, W] tensors live in buffers reused from step to step (a
fresh multi-MB tensor per step costs page faults on a par with its product on CPU).

Cheap per-step validation under the fixed blend (s=0.01, α=β=γ=1, λ=0.5):
  * S1 and the class weights w never change: computed once (bridge.methods.semobridge.algebra.FixedBlend);
  * S2 = q̄ Pᵀ reuses the prototypes P of the training forward pass: step t+1's forward evaluates the
    parameters left by update t, so the state after every update is validated without a second pass
    over the support (one forward-only pass follows the last update);
  * S2, S3 = n(q̄ B Wt) F̄ᵀ and S3's norms come from ONE product of the unit queries with stacked
    right-hand sides (bridge.methods.semobridge.algebra.selection_maps); queries shared by the seeds are multiplied
    once for all of them.
Cost per seed and step, N = C·K', D = W: three [N, D]×[D, W] products for the losses (u = X B, v = u G
with G = Wt Wtᵀ for ‖u Wt‖, Xᵀ ∂u) and five of width C, plus a [D, W]×[W, D] and an [Nv, D]×[D, D + 2C]
one for validation; against six [N, D]×[D, D]-sized products for the losses (bridge, project, both
backward) and two more to re-bridge the support, two [Nv, D]-sized ones for the queries, for the plain
procedure (see bridge/speed.py).
Selection "best-val" keeps, per seed, the state with the highest validation accuracy, the EARLIEST such
state on ties (accuracy is a step function: the first state to reach it has moved least from B0);
"last" keeps the final state and skips validation. States are numbered by updates applied (1..steps).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from clipbridge.bridge.methods.semobridge import loss as sl
from clipbridge.bridge.methods.semobridge import algebra as sm
from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.progress import progress
from clipbridge.bridge.text import ClassText

SELECTIONS = ("best-val", "last")


class TrainSettings(NamedTuple):
    steps: int = 5000
    warmup: int = 500
    lr: float = 1.5e-4
    weight_decay: float = 0.01
    warmup_start_lr: float = 1e-5
    csb: bool = True
    selection: str = "best-val"
    selection_blend: tuple[float, ...] = sm.FIXED_BLEND


class TrainOutcome(NamedTuple):
    """bridge [S, D, W], bias [S, C, W] | None: the selected state; last_bridge/last_bias: the final one;
    selected_step [S] int64 (updates applied); selected_accuracy [S] fixed-blend val accuracy of the
    selected state (NaN with selection "last"); final_loss [S] total loss of the final state."""

    bridge: Tensor
    bias: Tensor | None
    last_bridge: Tensor
    last_bias: Tensor | None
    selected_step: Tensor
    selected_accuracy: Tensor
    final_loss: Tensor


def learning_rate(step: int, settings: TrainSettings) -> float:
    """lr of update `step` (0-based): warmup_start_lr at 0, lr·step/warmup while step < warmup, then lr."""
    if step == 0 and settings.warmup > 0:
        return settings.warmup_start_lr
    if step < settings.warmup:
        return settings.lr * step / settings.warmup
    return settings.lr


def train_bridge(views: sm.WeightedViews, text: ClassText, text_projection: Tensor, initial: Tensor,
                 logit_scale: float, settings: TrainSettings, val: Tensor | None = None,
                 val_labels: Tensor | None = None, affine: sm.AffineHead | None = None) -> TrainOutcome:
    """Train B (init `initial` [D, W]) and, with settings.csb, b (init 0) on every support view.

    views        support views (bridge.methods.semobridge.algebra.weighted_views) of S seeds
    val          [S, Nv, D] raw validation queries, val_labels [S, Nv] (-1 = padding): needed for
                 selection "best-val", unused for "last"
    affine       the AffineHead of an affine text projection (None: linear; see algebra's docstring)
    """
    _check(settings, val, val_labels)
    s, num_classes = views.raw.shape[0], text.projected.shape[0]
    dtype = views.raw.dtype
    bridge = initial.to(dtype).expand(s, *initial.shape).clone()
    bias = torch.zeros(s, num_classes, initial.shape[-1], dtype=dtype, device=bridge.device) if settings.csb else None
    params = [bridge] if bias is None else [bridge, bias]
    optimizer = _adamw(params, settings)
    gram = text_projection @ text_projection.T
    problem = sl.loss_problem(views, text.projected, text.eos, text_projection, logit_scale, gram, affine)
    work = sm.Workspace()
    validate = settings.selection == "best-val" and settings.steps > 0
    if validate:
        selection = _Selection(views, text, text_projection, gram, val, val_labels, work, affine,
                               settings.selection_blend)
        best = _Best.start(bridge, bias)

    with progress(settings.steps) as report:
        for step in range(settings.steps + 1):
            fwd = sl.loss_forward(problem, bridge, bias, work)
            total = fwd.losses["total"]
            if not bool(torch.isfinite(total).all()):
                raise BridgeInputError(f"SeMoBridge-T loss became non-finite at step {step}")
            if validate and step > 0:
                best.update(selection.accuracy(bridge, fwd.prototypes), step, bridge, bias)
            if step < settings.steps:
                bridge.grad, grad_bias = sl.loss_backward(problem, fwd, bias, work)
                if bias is not None:
                    bias.grad = grad_bias
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, settings)
                optimizer.step()
                report.advance(1, best.accuracy if validate and step > 0 else None)

    bridge.grad = None
    if bias is not None:
        bias.grad = None
    if validate:
        return TrainOutcome(best.bridge, best.bias, bridge, bias, best.step, best.accuracy, total)
    steps = torch.full((s,), settings.steps, dtype=torch.long)
    nan = torch.full((s,), float("nan"), dtype=dtype)
    return TrainOutcome(bridge, bias, bridge, bias, steps, nan, total)


def _adamw(params: list[Tensor], settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW (betas 0.9/0.999, eps 1e-8); the fused kernel where this torch has it for the device (about
    10x faster than the per-tensor loop on CPU; same update rule), else the default implementation."""
    kwargs = dict(lr=settings.lr, betas=(0.9, 0.999), weight_decay=settings.weight_decay)
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, **kwargs)


class _Selection:
    """Fixed-blend validation accuracy of a state (bridge [S, D, W], its prototypes P [S, C, D]) -> [S].
    S1, w and F̄ Wtᵀ are computed once; queries shared by all seeds (val expanded from one copy) are
    multiplied once for all seeds (bridge.methods.semobridge.algebra.selection_maps). With an affine
    projection S3 comes from the raw queries minus b (algebra.affine_query_cosines) and S2 = q̄ Pᵀ."""

    def __init__(self, views: sm.WeightedViews, text: ClassText, text_projection: Tensor, gram: Tensor,
                 val: Tensor, val_labels: Tensor, work: sm.Workspace, affine: sm.AffineHead | None = None,
                 blend=sm.FIXED_BLEND):
        image_protos = sm.image_prototypes(views, text.projected.shape[0])
        queries = val[0] if val.shape[0] == 1 or val.stride(0) == 0 else val
        self.unit = queries / sm.safe_norm(queries)
        s1 = (self.unit @ text.projected.T).expand(val.shape[0], -1, -1)
        self.judge = sm.FixedBlend(s1, sm.divergence(image_protos, text.projected), val_labels, blend)
        self.image_w = image_protos @ (text_projection if affine is None else affine.projection).T
        self.text_projection, self.gram, self.work = text_projection, gram, work
        self.affine, self.shifted = affine, None if affine is None else queries - affine.bias

    def accuracy(self, bridge: Tensor, prototypes: Tensor) -> Tensor:
        if self.affine is not None:
            s2 = torch.matmul(self.unit, prototypes.transpose(1, 2))
            return self.judge.accuracy(s2, sm.affine_query_cosines(self.shifted, bridge, self.affine, self.image_w))
        s2, s3 = sm.selection_maps(self.unit, bridge, self.text_projection, self.gram, self.image_w, prototypes,
                                   self.work)
        return self.judge.accuracy(s2, s3)


class _Best:
    """Per-seed best state so far; strictly better accuracy replaces it (earliest kept on ties)."""

    def __init__(self, bridge: Tensor, bias: Tensor | None, accuracy: Tensor, step: Tensor):
        self.bridge, self.bias, self.accuracy, self.step = bridge, bias, accuracy, step

    @classmethod
    def start(cls, bridge: Tensor, bias: Tensor | None) -> "_Best":
        s = bridge.shape[0]
        acc = torch.full((s,), -1.0, dtype=bridge.dtype, device=bridge.device)
        return cls(bridge.clone(), None if bias is None else bias.clone(), acc,
                   torch.zeros(s, dtype=torch.long))

    def update(self, accuracy: Tensor, step: int, bridge: Tensor, bias: Tensor | None) -> None:
        better = accuracy > self.accuracy
        if not bool(better.any()):
            return
        self.accuracy = torch.where(better, accuracy, self.accuracy)
        self.step = torch.where(better.cpu(), torch.tensor(step), self.step)
        self.bridge = torch.where(better[:, None, None], bridge, self.bridge)
        if bias is not None:
            self.bias = torch.where(better[:, None, None], bias, self.bias)


def _check(settings: TrainSettings, val: Tensor | None, val_labels: Tensor | None) -> None:
    if settings.steps < 0 or settings.warmup < 0:
        raise BridgeInputError(f"steps and warmup must be >= 0, got {settings.steps} and {settings.warmup}")
    if not settings.lr > 0 or settings.weight_decay < 0:
        raise BridgeInputError(f"lr must be > 0 and weight_decay >= 0, got {settings.lr} and {settings.weight_decay}")
    if len(settings.selection_blend) != len(sm.BLEND_PARAMS) or any(x < 0 for x in settings.selection_blend):
        raise BridgeInputError(f"selection_blend must be {len(sm.BLEND_PARAMS)} numbers >= 0 "
                               f"({', '.join(sm.BLEND_PARAMS)}), got {list(settings.selection_blend)}")
    if settings.selection not in SELECTIONS:
        raise BridgeInputError(f"selection must be one of {SELECTIONS}, got {settings.selection!r}")
    if settings.selection == "best-val" and (val is None or val_labels is None or not bool((val_labels >= 0).any())):
        raise BridgeInputError("selection='best-val' needs validation queries; use selection='last'")
