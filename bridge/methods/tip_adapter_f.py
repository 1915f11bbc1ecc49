"""Tip-Adapter-F: Tip-Adapter with trainable cache keys (METHOD.md §5).

Keys start as Tip-Adapter's (n(mean of a shot's views)) and are trained, as in the paper, without
re-normalisation, on every real support view n(f) with cross-entropy on
    τ n(f) T̄ᵀ + init_alpha · exp(−init_beta (1 − n(f) keysᵀ)) Y
using AdamW (lr 1e-3, eps 1e-4, cosine schedule as in the paper's code) for `epochs` epochs, full-batch
(batch_size 0, one step per epoch) or mini-batch (batch_size B), in an order reshuffled every epoch from
each seed's own generator (bridge.training.view_cycle).
What an epoch trains on (`train_views`):
    "all"    every cached view of every shot, each epoch (the default; with one view per shot, the plain
             images)
    "cycle"  one view per shot per epoch, view e mod V in epoch e (bridge.training.view_cycle): the cache's
             stand-in for the official trainer's fresh random crop of every image each epoch, so an epoch
             is C·K images and, at batch 256, ceil(C·K / 256) steps (the paper recipe)
The keys of the epoch chosen on validation at (init_alpha, init_beta) are kept — test data is never seen
(`select`, bridge.training.train_and_select): "trained-epochs" (the paper recipe; the official loop) the
best of epochs 1..E, earliest on ties; "with-epoch-0" (the default, the uniform recipe) the same with the
training-free keys (epoch 0) as a candidate; "last" the last epoch. (α, β) are then searched on validation
with the learned keys exactly as for Tip-Adapter (bridge.methods.tip_adapter.search_alpha_beta; the paper
recipe: the official grid, search="grid").
"""
from __future__ import annotations

import torch
from torch import Tensor

from clipbridge.bridge.features import begin_fit, shot_keys, support_views, validation
from clipbridge.bridge.fusion import SEARCH_MODES
from clipbridge.bridge.methods.tip_adapter import SEARCH_DEFAULTS, cache_logits, tip_logits, tip_state
from clipbridge.bridge.methods.zeroshot import zeroshot_logits
from clipbridge.bridge.ops import accuracy
from clipbridge.bridge.registry import FittedState, register_method
from clipbridge.bridge.training import train_and_select, view_cycle


@register_method
class TipAdapterF:
    name = "tip-adapter-f"
    summary = "Tip-Adapter with the cache keys fine-tuned (epoch chosen on validation), then (alpha, beta) re-searched"
    defaults = {"epochs": 20, "lr": 1e-3, "weight_decay": 0.01, "eps": 1e-4, "batch_size": 0,
                "schedule": "cosine", "init_alpha": 1.0, "init_beta": 1.0, "select": "with-epoch-0", "train_views": "all",
                **SEARCH_DEFAULTS}
    rules = {"train_views": ("all", "cycle"), "search": SEARCH_MODES}

    def fit(self, task, **hparams) -> FittedState:
        hp, start, dtype, text = begin_fit(self, task, hparams)
        keys = shot_keys(task, dtype)
        key_mask = keys.mask.reshape(task.num_classes, -1)
        views = support_views(task, dtype)
        s = task.num_seeds
        epochs = int(hp["epochs"])
        # "all": each cached view is an item of its own (V = 1); "cycle": a shot's V views take turns by epoch
        cycle = view_cycle(task.seeds, task.support_mask, task.views if hp["train_views"] == "cycle" else 1,
                           epochs, int(hp["batch_size"]))
        per_epoch = cycle.steps_per_epoch
        y = views.labels
        base = zeroshot_logits(views.x, text, task.logit_scale)                          # [S, C·K', C]
        alpha0 = hp["init_alpha"]
        beta0 = torch.full((s, 1), float(hp["init_beta"]), dtype=dtype, device=text.device)

        def loss(params: dict[str, Tensor], step: int) -> Tensor:
            idx = cycle.batch(step)                                                       # [S, B]
            x = views.x.gather(1, idx.unsqueeze(-1).expand(-1, -1, views.x.shape[-1]))
            logits = base.gather(1, idx.unsqueeze(-1).expand(-1, -1, base.shape[-1])) \
                + alpha0 * cache_logits(x, params["keys"], key_mask, beta0).squeeze(1)
            logp = torch.log_softmax(logits, -1)
            return -logp.gather(-1, y[idx].unsqueeze(-1)).squeeze(-1).mean(-1)

        val_q, val_y = validation(task, dtype)
        val_base = zeroshot_logits(val_q, text, task.logit_scale)

        def val_accuracy(params: dict[str, Tensor]) -> Tensor:
            cache = cache_logits(val_q, params["keys"], key_mask, beta0).squeeze(1)
            return accuracy(val_base + alpha0 * cache, val_y)

        trained = train_and_select({"keys": keys.x}, loss, val_accuracy, steps=cycle.steps, lr=hp["lr"],
                                   weight_decay=hp["weight_decay"], eps=hp["eps"], eval_every=per_epoch,
                                   select=hp["select"], schedule=hp["schedule"])
        epoch_chosen = (trained.step // per_epoch).tolist()
        curve = trained.curve.transpose(0, 1).tolist()                                   # [S, epochs + 1]
        return tip_state(self.name, task, hp, text, trained.params["keys"], key_mask, start,
                         extra_hparams=[{"epoch": e} for e in epoch_chosen],
                         extra_info={"train_val_accuracy": curve})

    def logits(self, state: FittedState, queries: Tensor) -> Tensor:
        return tip_logits(state, queries)
