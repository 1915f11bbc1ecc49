"""Recompute of the golden APE fixtures (key method = "ape") with the project's
APE functions, for `python -m clipbridge.bridge.parity`.

Inputs are already normalised, as APE's cached features are: clip_weights [D, C] (columns n(class text)),
cache_keys [C·K, D] class-major, cache_values [C·K, C] one-hot, val/test [N, D], k, w = (w0, w1),
search_scale and search_steps for (β, α, γ), init_params = (β, α, γ). τ = 100 as in the official code.
Outputs: indices [k], cache_div [C·K, 1], test_logits_init, best_params = (β, α, γ) of the official grid,
best_val_acc, test_logits_best, test_acc_best. `indices` and `best_params` must match exactly.
"""
from __future__ import annotations

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.methods.ape.search import grid_search, official_axes
from clipbridge.bridge.methods.ape.training_free import ape_cache
from clipbridge.bridge.ops import accuracy

EXACT_KEYS = ("indices", "best_params")
LOGIT_SCALE = 100.0


def recompute_ape(fx: dict[str, Tensor], dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """Every output key of an APE fixture, recomputed from its input keys."""
    f = {k: (v.to(dtype) if isinstance(v, Tensor) and v.is_floating_point() else v) for k, v in fx.items()}
    text = f["clip_weights"].T.contiguous()                                           # [C, D]
    keys = f["cache_keys"].unsqueeze(0)                                               # [1, C·K, D]
    c, shots = text.shape[0], int(f["shots"])
    labels = f["cache_values"].argmax(-1)
    if keys.shape[1] != c * shots or not torch.equal(labels, torch.arange(c).repeat_interleave(shots)):
        raise BridgeInputError("cache_keys/cache_values are not C·K class-major one-hot rows")
    w0, w1 = (float(x) for x in f["w"])
    model = ape_cache(text, keys, torch.ones(c * shots, dtype=torch.bool), int(f["k"]), w0, w1,
                      torch.tensor(LOGIT_SCALE, dtype=dtype))
    test, val = f["test"].unsqueeze(0), f["val"].unsqueeze(0)

    def logits_at(params: Tensor) -> Tensor:
        beta, alpha, gamma = (params[i].reshape(1) for i in range(3))
        return model.logits(test, beta, alpha, gamma)[0]

    scale, steps = f["search_scale"].tolist(), f["search_steps"].tolist()
    hp = {"beta_scale": scale[0], "alpha_scale": scale[1], "gamma_scale": scale[2],
          "beta_steps": steps[0], "alpha_steps": steps[1], "gamma_steps": steps[2]}
    choice = grid_search(model, val, f["val_labels"].unsqueeze(0), official_axes(hp, with_gamma=True))
    best = choice.best[0]
    test_best = logits_at(best)
    return {
        "indices": model.channels[0],
        "cache_div": model.divergence[0].unsqueeze(-1),
        "test_logits_init": logits_at(f["init_params"]),
        "best_params": best,
        "best_val_acc": choice.val_accuracy[0],
        "test_logits_best": test_best,
        "test_acc_best": accuracy(test_best, f["test_labels"]),
    }
