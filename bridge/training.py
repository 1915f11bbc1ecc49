"""One training loop for every trained baseline (Tip-Adapter-F, CMM): seed-batched AdamW with
validation-based selection of the step to keep.

Parameters carry a leading seed dim S and the loss returns one value per seed. The seeds' losses are summed
before `backward`; since the loss of seed s depends only on parameters [s] and AdamW's update (moments,
bias correction, decoupled weight decay) is elementwise, one AdamW over [S, ...] tensors is exactly S
independent AdamWs run side by side.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError


@dataclass
class TrainResult:
    """params        the kept parameters per seed (leading dim S), detached
    step           [S] int64, optimisation step whose parameters were kept (0 = initial values)
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
    select: str = "best",
    schedule: str = "constant",
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> TrainResult:
    """Minimise `loss` from `init` with AdamW for `steps` steps; keep, per seed, the evaluated parameters
    with the best validation accuracy (select="best", earliest on ties) or the final ones (select="last").

    init          named tensors [S, ...] (copied, never modified)
    loss          (params, step) -> [S] per-seed loss; `step` lets a caller pick a mini-batch
    val_accuracy  params -> [S] validation accuracy in percent (called under no_grad)
    schedule      "constant" or "cosine" (cosine annealing to 0 over `steps`)
    Evaluations happen at step 0 (the initial values), every `eval_every` steps, and after the last step.
    """
    if steps < 0 or eval_every < 1:
        raise BridgeInputError(f"steps must be >= 0 and eval_every >= 1, got {steps} and {eval_every}")
    if select not in ("best", "last"):
        raise BridgeInputError(f"select must be 'best' or 'last', got {select!r}")
    if schedule not in ("constant", "cosine"):
        raise BridgeInputError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    params = {k: v.detach().clone().requires_grad_(True) for k, v in init.items()}
    optimizer = torch.optim.AdamW(list(params.values()), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def evaluate() -> Tensor:
        with torch.no_grad():
            return val_accuracy(params).detach()

    acc = evaluate()
    best = {k: v.detach().clone() for k, v in params.items()}
    best_acc, best_step = acc.clone(), torch.zeros(acc.shape, dtype=torch.long, device=acc.device)
    curve, curve_steps = [acc], [0]
    for step in range(1, steps + 1):
        if schedule == "cosine":
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * (step - 1) / steps))
        optimizer.zero_grad(set_to_none=True)
        value = loss(params, step - 1)
        if not bool(torch.isfinite(value).all()):
            raise BridgeInputError(f"training loss became non-finite at step {step} (lr {lr} too large?)")
        value.sum().backward()
        optimizer.step()
        if step % eval_every and step != steps:
            continue
        acc = evaluate()
        curve.append(acc)
        curve_steps.append(step)
        better = acc > best_acc if select == "best" else torch.ones_like(acc, dtype=torch.bool)
        best_acc = torch.where(better, acc, best_acc)
        best_step = torch.where(better, torch.full_like(best_step, step), best_step)
        for k, v in params.items():
            keep = better.reshape(-1, *([1] * (v.ndim - 1)))
            best[k] = torch.where(keep, v.detach(), best[k])
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
