"""CLIP-Adapter (RECIPES.md §2.5; Gao et al., "CLIP-Adapter", IJCV 2023; gaopengcuhk/CLIP-Adapter:clip_adapter.py).

    A(f)   = ReLU(ReLU(f W1) W2)          W1 [D, D/r], W2 [D/r, D], no biases, r = `reduction` (4)
    x      = ratio · A(f) + (1 − ratio) · f                f the raw (un-normalised) image embedding, ratio 0.2
    logits = τ n(x) T̄ᵀ                                     T̄ the class text (METHOD.md §1)

Only the adapter is trained, with cross-entropy on the support views. D is the task's width (the official
trainer hard-codes 1024, RN50's). W1, W2 start as torch.nn.Linear does (Kaiming-uniform with a = √5, i.e.
U(−1/√fan_in, 1/√fan_in)), drawn per seed on the CPU (so every device starts from the same values).

Schedule: the official repository ships no config (RECIPES.md §2.5); we use SeMoBridge's CLIP-Adapter
ViT-B/16 config, which is CoOp's (christti98/semobridge:configs/trainers/CLIP_Adapter/vit_b16.yaml;
KaiyangZhou/CoOp:configs/trainers/CoOp/vit_b16.yaml): SGD lr 0.002, 200 epochs, batch 32, cosine schedule
stepped per epoch after 1 warm-up epoch at a constant 1e-5 (bridge.training.warmup_cosine_per_epoch). The
config leaves momentum and weight decay at Dassl's defaults, momentum 0.9, weight decay 5e-4, no dampening,
no Nesterov (KaiyangZhou/Dassl.pytorch:dassl/config/defaults.py `_C.OPTIM`; dassl/optim/optimizer.py passes
them to torch.optim.SGD). Data: one cached view of each shot per epoch, cycling through a shot's views
(bridge.training.view_cycle), where Dassl draws RandomResizedCrop (scale 0.08-1) + flip on the fly.

Selection (`select`, bridge.training.train_and_select), never looking at test data: "trained-epochs" (the
paper recipe) the epoch of epochs 1..E with the best validation accuracy, earliest on ties, as Dassl's
`TEST.FINAL_MODEL best_val` (validated after every epoch, a later epoch kept only when strictly better);
"with-epoch-0" (the default, the uniform recipe) the same with the untrained adapter (epoch 0) as a candidate;
"last" the last epoch, Dassl's `last_step` (SeMoBridge's ImageNet config; the paper recipe on ImageNet).
"""
from __future__ import annotations

import time

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.features import begin_fit, prepare_queries, support_views, validation
from clipbridge.bridge.methods.zeroshot import zeroshot_logits
from clipbridge.bridge.ops import accuracy
from clipbridge.bridge.registry import FittedState, register_method
from clipbridge.bridge.training import seed_generators, train_and_select, view_cycle, warmup_cosine_per_epoch

# Adapter weights are drawn from generators seeded with seed + INIT_STREAM, so they never share a random
# stream with the mini-batch order (seeded with the seed itself).
INIT_STREAM = 1 << 32


def adapter_features(f: Tensor, w1: Tensor, w2: Tensor, ratio: float) -> Tensor:
    """n(ratio · ReLU(ReLU(f W1) W2) + (1 − ratio) · f): raw f [S, N, D], W1 [S, D, H], W2 [S, H, D] -> [S, N, D]
    (zero rows, i.e. padding, stay zero)."""
    x = ratio * torch.relu(torch.relu(f @ w1) @ w2) + (1 - ratio) * f
    return x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def initial_adapter(seeds: tuple[int, ...], dim: int, hidden: int, dtype: torch.dtype,
                    device: torch.device) -> dict[str, Tensor]:
    """W1 [S, D, H] ~ U(±1/√D), W2 [S, H, D] ~ U(±1/√H), torch.nn.Linear's default, one generator per seed."""
    w1, w2 = [], []
    for g in seed_generators(tuple(int(s) + INIT_STREAM for s in seeds), torch.device("cpu")):
        w1.append((torch.rand(dim, hidden, generator=g, dtype=torch.float64) * 2 - 1) / dim ** 0.5)
        w2.append((torch.rand(hidden, dim, generator=g, dtype=torch.float64) * 2 - 1) / hidden ** 0.5)
    return {"w1": torch.stack(w1).to(device=device, dtype=dtype), "w2": torch.stack(w2).to(device=device, dtype=dtype)}


@register_method
class CLIPAdapter:
    name = "clip-adapter"
    summary = ("CLIP-Adapter: a residual bottleneck adapter on the image feature trained with cross-entropy "
               "against the class text, epoch chosen on validation")
    defaults = {"reduction": 4, "ratio": 0.2, "epochs": 200, "lr": 0.002, "momentum": 0.9, "weight_decay": 5e-4,
                "batch_size": 32, "warmup_epochs": 1, "warmup_lr": 1e-5, "select": "with-epoch-0"}

    def fit(self, task, **hparams) -> FittedState:
        hp, start, dtype, text = begin_fit(self, task, hparams)
        d = task.dim
        hidden = d // int(hp["reduction"]) if int(hp["reduction"]) > 0 else 0
        if hidden < 1:
            raise BridgeInputError(f"{self.name}: reduction must be in [1, {d}], got {hp['reduction']}")
        ratio, tau = float(hp["ratio"]), task.logit_scale
        views = support_views(task, dtype, normalize=False)              # raw f; checks zero views, zeroes padding
        epochs = int(hp["epochs"])
        cycle = view_cycle(task.seeds, task.support_mask, task.views, epochs, int(hp["batch_size"]))
        schedule = warmup_cosine_per_epoch(hp["lr"], epochs, cycle.steps_per_epoch, int(hp["warmup_epochs"]),
                                           hp["warmup_lr"])

        def loss(params: dict[str, Tensor], step: int) -> Tensor:
            idx = cycle.batch(step)                                                       # [S, B]
            f = views.x.gather(1, idx.unsqueeze(-1).expand(-1, -1, d))
            logits = zeroshot_logits(adapter_features(f, params["w1"], params["w2"], ratio), text, tau)
            logp = torch.log_softmax(logits, -1)
            return -logp.gather(-1, views.labels[idx].unsqueeze(-1)).squeeze(-1).mean(-1)

        val, val_y = validation(task, dtype, normalize=False)                 # raw; refuses zero validation rows

        def val_accuracy(params: dict[str, Tensor]) -> Tensor:
            return accuracy(zeroshot_logits(adapter_features(val, params["w1"], params["w2"], ratio), text, tau),
                            val_y)

        trained = train_and_select(initial_adapter(task.seeds, d, hidden, dtype, text.device), loss, val_accuracy,
                                   steps=cycle.steps, lr=hp["lr"], weight_decay=hp["weight_decay"],
                                   eval_every=cycle.steps_per_epoch, select=hp["select"], schedule=schedule,
                                   optimizer="sgd", momentum=hp["momentum"])
        epoch_chosen = (trained.step // cycle.steps_per_epoch).tolist()
        tensors = {"text": text, **trained.params, "ratio": torch.tensor(ratio, dtype=dtype, device=text.device),
                   "logit_scale": torch.tensor(tau, dtype=dtype, device=text.device)}
        info = {"val_accuracy": trained.val_accuracy.tolist(), "fit_seconds": time.perf_counter() - start,
                "search_seconds": 0.0, "train_val_accuracy": trained.curve.transpose(0, 1).tolist()}
        return FittedState(self.name, tensors, [{**hp, "epoch": e} for e in epoch_chosen], info)

    def logits(self, state: FittedState, queries: Tensor) -> Tensor:
        t = state.tensors
        q = prepare_queries(queries, len(state.hparams), t["text"], normalize=False)   # raw; refuses zero rows
        return zeroshot_logits(adapter_features(q, t["w1"], t["w2"], float(t["ratio"])), t["text"],
                               t["logit_scale"])
