"""APE, training-free (RECIPES.md §2.3; yangyangyang127/APE:main.py `APE`): the registered method "ape".

    keys      = n(mean of a shot's raw views)  (Tip-Adapter's cache keys)          [S, C·K, D]
    kept      = the k channels of largest criterion (channels.py; w0, w1)           [S, k]
    keys', T' = keys and T̄ on the kept channels, each row re-normalised
    d_i       = log2((1 + 1e-6) / (softmax_c(keys'_i · T'ᵀ)_{y_i} + 1e-6))          (cache.py)
    logits    = τ q̄ T̄ᵀ + α Σ_{i of class c} exp(−β(1 − n(q̄[kept]) · keys'_i)) exp(γ d_i)

(β, α, γ) per seed on validation (search.py: search="batched" by default, the uniform recipe; search="grid",
the official grid with the dataset's γ steps, under the paper recipe). Defaults are the median of the 11 official RN50 configs (yangyangyang127/APE:configs/*.yaml): k =
700/1024 of the channels, w = (0.5, 0.5), search scales (7, 7, 1), steps (200, 20, 20).
"""
from __future__ import annotations

import torch
from torch import Tensor

from clipbridge.bridge.features import begin_fit, shot_keys, validation
from clipbridge.bridge.methods.ape.cache import CacheModel, key_divergence, model_logits
from clipbridge.bridge.methods.ape.channels import channel_count, channel_criterion, refine, select_channels
from clipbridge.bridge.methods.ape.search import SEARCH_MODES, search_parameters
from clipbridge.bridge.registry import FittedState, register_method

# Search box and its official grid (shared with APE-T, which has no γ).
SEARCH_DEFAULTS = {"search": "batched", "beta_scale": 7.0, "alpha_scale": 7.0, "beta_steps": 200,
                   "alpha_steps": 20, "grid_points": 6, "search_rounds": 4, "search_per_round": 64}


def ape_cache(text: Tensor, keys: Tensor, key_mask: Tensor, k: int, w0: float, w1: float,
              logit_scale: Tensor) -> CacheModel:
    """APE's cache model from class text T̄ [C, D], class-major keys [S, C·K, D] with key_mask [C·K]."""
    s, c = keys.shape[0], text.shape[0]
    channels = select_channels(channel_criterion(text, keys, key_mask, w0, w1), k)          # [S, k]
    refined_keys = refine(keys, channels, key_mask.unsqueeze(0), "support keys")
    refined_text = refine(text.expand(s, -1, -1), channels, torch.ones((), dtype=torch.bool, device=text.device),
                          "class text")
    labels = torch.arange(c, device=keys.device).repeat_interleave(keys.shape[1] // c)
    weight = key_mask.to(keys.dtype).expand(s, -1)
    divergence = key_divergence(refined_keys, refined_text, labels) * weight
    return CacheModel(text=text, keys=refined_keys, weight=weight, divergence=divergence, channels=channels,
                      logit_scale=logit_scale)


def cache_state(name: str, task, hp: dict, model: CacheModel, start: float, with_gamma: bool,
                extra_hparams: list[dict] | None = None, extra_info: dict | None = None) -> FittedState:
    """Search the fusion parameters on validation and package the FittedState of APE or APE-T."""
    val_q, val_y = validation(task, model.keys.dtype)
    choice = search_parameters(model, val_q, val_y, hp, task.seeds, with_gamma, name)
    beta, alpha = choice.best[:, 0], choice.best[:, 1]
    gamma = choice.best[:, 2] if with_gamma else torch.zeros_like(beta)
    tensors = {**model.tensors(), "beta": beta, "alpha": alpha, "gamma": gamma}
    extra_hparams = extra_hparams or [{} for _ in task.seeds]
    chosen = []
    for s, more in enumerate(extra_hparams):
        picked = {"beta": float(beta[s]), "alpha": float(alpha[s])}
        chosen.append({**hp, **more, **picked, **({"gamma": float(gamma[s])} if with_gamma else {})})
    return FittedState(name, tensors, chosen, choice.fit_info(start, **(extra_info or {})))


@register_method
class APE:
    name = "ape"
    summary = ("APE: Tip-Adapter's cache on the channels that best separate the classes, keys weighted by their "
               "text divergence; (beta, alpha, gamma) searched on validation")
    rules = {"search": SEARCH_MODES}
    defaults = {"k": 0, "k_fraction": 700 / 1024, "w0": 0.5, "w1": 0.5, "gamma_scale": 1.0, "gamma_steps": 20,
                **SEARCH_DEFAULTS}

    def fit(self, task, **hparams) -> FittedState:
        hp, start, dtype, text = begin_fit(self, task, hparams)
        keys = shot_keys(task, dtype)
        k = channel_count(task.dim, int(hp["k"]), float(hp["k_fraction"]), self.name)
        tau = torch.tensor(task.logit_scale, dtype=dtype, device=text.device)
        model = ape_cache(text, keys.x, keys.mask, k, hp["w0"], hp["w1"], tau)
        return cache_state(self.name, task, hp, model, start, with_gamma=True,
                           extra_hparams=[{"channels_kept": k} for _ in task.seeds])

    def logits(self, state: FittedState, queries: Tensor) -> Tensor:
        return model_logits(state.tensors, len(state.hparams), queries)
