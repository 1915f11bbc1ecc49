"""One training loop for every trained baseline (Tip-Adapter-F, CMM, APE-T, CLIP-Adapter): seed-batched
AdamW or SGD with validation-based selection of the step to keep, plus the mini-batch orders they train on.

Parameters carry a leading seed dim S and the loss returns one value per seed. The seeds' losses are summed
before `backward`; since the loss of seed s depends only on parameters [s] and the updates of AdamW (moments,
bias correction, decoupled weight decay) and of SGD (momentum, coupled weight decay) are elementwise, one
optimiser over [S, ...] tensors is exactly S independent optimisers run side by side.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.hparams import SELECT_MODES
from clipbridge.bridge.progress import progress


@dataclass
class TrainResult:
    """params        the kept parameters per seed (leading dim S), detached
    step           [S] int64, optimisation step whose parameters were kept (0 = initial values, possible only
                   with select="with-epoch-0" or when nothing was trained)
    val_accuracy   [S] validation accuracy (percent) of the kept parameters
    curve          [E, S] validation accuracy at each evaluation, taken at `curve_steps`
    curve_steps    the E steps evaluated (0, eval_every, 2·eval_every, ..., steps)
    """

    params: dict[str, Tensor]
    step: Tensor
    val_accuracy: Tensor
    curve: Tensor
    curve_steps: list[int]


def train_and_select(
    init: dict[str, Tensor],
    loss: Callable[[dict[str, Tensor], int], Tensor],
    val_accuracy: Callable[[dict[str, Tensor]], Tensor],
    *,
    steps: int,
    lr: float,
    weight_decay: float = 0.01,
    eval_every: int = 1,
    select: str = "with-epoch-0",
    schedule: str | Callable[[int], float] = "constant",
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    optimizer: str = "adamw",
    momentum: float = 0.9,
) -> TrainResult:
    """Minimise `loss` from `init` with AdamW (or SGD) for `steps` steps; keep, per seed, the evaluated
    parameters chosen by `select` (bridge.hparams.SELECT_MODES):
        "trained-epochs"  the best validation accuracy among the evaluations after training steps (the
                          official loops: best accuracy starts below any, a later evaluation replaces the kept
                          one only when strictly better, so the earliest best wins)
        "with-epoch-0"    the same with the initial values (step 0) as a candidate too: they are kept unless
                          a trained evaluation is strictly better
        "last"            the final parameters

    init          named tensors [S, ...] (copied, never modified)
    loss          (params, step) -> [S] per-seed loss; `step` lets a caller pick a mini-batch
    val_accuracy  params -> [S] validation accuracy in percent (called under no_grad)
    schedule      "constant", "cosine" (cosine annealing to 0 over `steps`, stepped per step), or a function
                  step (0-based) -> learning rate of that step (e.g. warmup_cosine_per_epoch)
    optimizer     "adamw" (betas, eps, decoupled weight_decay) or "sgd" (momentum, coupled weight_decay,
                  no dampening, no Nesterov: torch.optim.SGD)
    Evaluations happen at step 0 (the initial values), every `eval_every` steps, and after the last step;
    each evaluation reports the steps done and the best validation accuracy so far to bridge.progress.
    """
    if steps < 0 or eval_every < 1:
        raise BridgeInputError(f"steps must be >= 0 and eval_every >= 1, got {steps} and {eval_every}")
    if select not in SELECT_MODES:
        raise BridgeInputError(f"select must be one of {', '.join(SELECT_MODES)}, got {select!r}")
    if not callable(schedule) and schedule not in ("constant", "cosine"):
        raise BridgeInputError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    if optimizer not in ("adamw", "sgd"):
        raise BridgeInputError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
    params = {k: v.detach().clone().requires_grad_(True) for k, v in init.items()}
    if optimizer == "sgd":
        opt = torch.optim.SGD(list(params.values()), lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(list(params.values()), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def evaluate() -> Tensor:
        with torch.no_grad():
            return val_accuracy(params).detach()

    acc = evaluate()
    best = {k: v.detach().clone() for k, v in params.items()}
    # the initial values are kept only if no evaluation replaces them: with-epoch-0 (strictly better), or
    # nothing trained; trained-epochs and last replace them at the first evaluation after a step
    best_acc = acc.clone() if select == "with-epoch-0" else torch.full_like(acc, -math.inf)
    best_step = torch.zeros(acc.shape, dtype=torch.long, device=acc.device)
    ranked = select != "last"
    curve, curve_steps = [acc], [0]
    reported = 0
    with progress(steps) as report:
        for step in range(1, steps + 1):
            if callable(schedule) or schedule == "cosine":
                rate = schedule(step - 1) if callable(schedule) else \
                    lr * 0.5 * (1.0 + math.cos(math.pi * (step - 1) / steps))
                for group in opt.param_groups:
                    group["lr"] = rate
            opt.zero_grad(set_to_none=True)
            value = loss(params, step - 1)
            if not bool(torch.isfinite(value).all()):
                raise BridgeInputError(f"training loss became non-finite at step {step} (lr {lr} too large?)")
            value.sum().backward()
            opt.step()
            if step % eval_every and step != steps:
                continue
            acc = evaluate()
            curve.append(acc)
            curve_steps.append(step)
            better = acc > best_acc if ranked else torch.ones_like(acc, dtype=torch.bool)
            best_acc = torch.where(better, acc, best_acc)
            best_step = torch.where(better, torch.full_like(best_step, step), best_step)
            for k, v in params.items():
                keep = better.reshape(-1, *([1] * (v.ndim - 1)))
                best[k] = torch.where(keep, v.detach(), best[k])
            report.advance(step - reported, best_acc if ranked else None)
            reported = step
    if steps == 0:
        best_acc = acc
    return TrainResult(params=best, step=best_step, val_accuracy=best_acc, curve=torch.stack(curve),
                       curve_steps=curve_steps)


def seed_generators(seeds: tuple[int, ...], device: torch.device) -> list[torch.Generator]:
    """One torch.Generator per seed, seeded with the seed itself (same stream whatever else is batched)."""
    gens = []
    for seed in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(seed))
        gens.append(g)
    return gens


def seed_permutations(seeds: tuple[int, ...], valid: Tensor, rounds: int) -> Tensor:
    """[S, rounds, n] per-seed random orders of the n indices where `valid` is True, a fresh order per
    round (epoch), drawn from each seed's own generator (CPU, so identical on every device)."""
    index = valid.nonzero().squeeze(-1).cpu()
    out = []
    for g in seed_generators(seeds, torch.device("cpu")):
        out.append(torch.stack([index[torch.randperm(index.numel(), generator=g)] for _ in range(rounds)]))
    return torch.stack(out).to(valid.device)


def warmup_cosine_per_epoch(lr: float, epochs: int, steps_per_epoch: int, warmup_epochs: int = 1,
                            warmup_lr: float = 1e-5) -> Callable[[int], float]:
    """Step (0-based) -> learning rate of Dassl's "cosine" scheduler with a constant warm-up, stepped once per
    epoch (CoOp's and CLIP-Adapter's ViT-B/16 schedule; KaiyangZhou/Dassl.pytorch:dassl/optim/lr_scheduler.py,
    ConstantWarmupScheduler around CosineAnnealingLR(T_max = epochs), WARMUP_RECOUNT True):

        epoch e < warmup_epochs:  warmup_lr
        epoch e ≥ warmup_epochs:  lr · ½ (1 + cos(π (e − warmup_epochs) / epochs))
    """

    def rate(step: int) -> float:
        epoch = step // steps_per_epoch
        if epoch < warmup_epochs:
            return warmup_lr
        return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / epochs))

    return rate


@dataclass(frozen=True)
class ViewCycle:
    """Mini-batches of support views for training on "one cached augmented copy per image per epoch".

    The official trainers of Tip-Adapter-F, APE-T and CLIP-Adapter draw a fresh random crop of every training
    image each epoch. A cache holds V augmented views per shot instead, so epoch e uses view (e mod V) of
    every shot: over V epochs each shot contributes each of its cached views exactly once (no view repeats
    before all have been used, which is the closest a finite cache gets to fresh crops; a seeded random
    choice would repeat some views and skip others). The order of the shots is reshuffled every epoch from
    the seed's own generator (bridge.training.seed_permutations). With V = 1 this is plain shuffled
    mini-batch training on the single view.

    order       [S, E, n] flat indices into the class-major support views [C·K'] (index c·K' + k·V + v) of
                the n real shots of each epoch, in the seed's shuffled order
    batch_size  views per step (the last step of an epoch takes the remainder)
    """

    order: Tensor
    batch_size: int

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.order.shape[-1] / self.batch_size)

    @property
    def steps(self) -> int:
        return self.order.shape[1] * self.steps_per_epoch

    def batch(self, step: int) -> Tensor:
        """[S, B] view indices of optimisation step `step` (0-based)."""
        epoch, part = divmod(step, self.steps_per_epoch)
        return self.order[:, epoch, part * self.batch_size:(part + 1) * self.batch_size]


def view_cycle(seeds: tuple[int, ...], view_mask: Tensor, views: int, epochs: int, batch_size: int) -> ViewCycle:
    """The ViewCycle of `epochs` epochs over the real shots of `view_mask` [C, K·V] (True = real view;
    shot-major views, V = `views`). A shot is real when any of its views is; epoch e takes its
    (e mod r)-th real view, r = its number of real views (all V when nothing is padded).
    batch_size 0 means one full batch per epoch.
    """
    if batch_size < 0 or epochs < 0:
        raise BridgeInputError(f"batch_size and epochs must be >= 0, got {batch_size} and {epochs}")
    c, kv = view_mask.shape
    real = view_mask.reshape(c * (kv // views), views)                                  # [C·K, V]
    counts = real.sum(-1)
    shot_valid = counts > 0
    n = int(shot_valid.sum())
    # position of each real view among its shot's real views; view_of[j, r] = r-th real view of shot j
    rank = real.long().cumsum(-1) - 1
    view_of = torch.zeros_like(rank)
    shot_index, view_index = real.nonzero(as_tuple=True)
    view_of[shot_index, rank[shot_index, view_index]] = view_index
    if epochs == 0:
        shots = torch.zeros(len(seeds), 0, n, dtype=torch.long, device=view_mask.device)
    else:
        shots = seed_permutations(seeds, shot_valid, epochs)                             # [S, E, n]
    epoch = torch.arange(epochs, device=view_mask.device).view(1, -1, 1)
    pick = view_of[shots, epoch % counts[shots].clamp_min(1)]
    return ViewCycle(order=shots * views + pick, batch_size=batch_size or max(n, 1))
