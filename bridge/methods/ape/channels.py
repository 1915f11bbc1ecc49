"""APE's channel refinement (RECIPES.md §2.3; Zhu et al., "Not All Features Matter", ICCV 2023).

Items of class c: its text prototype T̄_c and its real few-shot keys. For every channel d of the joint space:

    sim_d       = mean over all pairs of items (i, j) of *different* classes of x_i[d] · x_j[d]
    var_d       = unbiased variance over the classes of T̄_c[d]
    criterion_d = −w0 · sim_d + w1 · var_d

and the k channels of largest criterion are kept, in decreasing order of criterion (as torch.topk returns
them). The pair mean has a closed form (the official code loops over the pairs): with s_c[d] the sum of
class c's items and m_c their number,

    Σ_{c ≠ c'} s_c s_c' = (Σ_c s_c)² − Σ_c s_c²,      pairs = (Σ_c m_c)² − Σ_c m_c².

The criterion is computed in float64 whatever the working dtype, so float32 and float64 tasks keep the same
channels.

k for widths other than RN50's D = 1024 (`channel_count`): the official configs ship only RN50 settings, k
between 400 and 900 of 1024 channels, so no k exists for ViT-B/16 (D = 512), where k > 512 is impossible. We
keep the same *fraction* of the channels: k = round(k_fraction · D), k_fraction = k_official / 1024 (so D =
1024 gets the official k exactly). The defaults are the median of the 11 official per-dataset configs
(yangyangyang127/APE:configs/*.yaml): 700/1024 for APE, 800/1024 for APE-T. A positive `k` overrides the
fraction with an absolute count.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.features import normalize_rows


def channel_count(dim: int, k: int, k_fraction: float, method: str) -> int:
    """The number of kept channels: `k` when positive (at most dim), else round(k_fraction · dim) >= 1."""
    if k > 0:
        if k > dim:
            raise BridgeInputError(f"{method}: k={k} channels asked for, the embeddings have only {dim}")
        return int(k)
    if not 0 < k_fraction <= 1:
        raise BridgeInputError(f"{method}: k_fraction must be in (0, 1], got {k_fraction}")
    return max(1, min(dim, int(math.floor(k_fraction * dim + 0.5))))


def channel_criterion(text: Tensor, keys: Tensor, key_mask: Tensor, w0: float, w1: float) -> Tensor:
    """criterion [S, D] (float64) from normalised class text T̄ [C, D], class-major keys [S, C·K, D] and
    key_mask [C·K] (True = a real shot; padded keys are left out of the pair mean)."""
    c, d = text.shape
    s = keys.shape[0]
    if c < 2:
        raise BridgeInputError("APE's channel criterion needs at least 2 classes")
    text64 = text.to(torch.float64)
    mask = key_mask.reshape(c, -1).to(torch.float64)                                    # [C, K]
    key_sum = (keys.to(torch.float64).reshape(s, c, -1, d) * mask[None, :, :, None]).sum(2)
    class_sum = text64.unsqueeze(0) + key_sum                                            # s_c  [S, C, D]
    items = 1.0 + mask.sum(1)                                                            # m_c  [C]
    cross = class_sum.sum(1) ** 2 - (class_sum ** 2).sum(1)                              # [S, D]
    pairs = float(items.sum() ** 2 - (items ** 2).sum())
    sim = cross / pairs
    var = torch.var(text64, dim=0)                                                       # unbiased over classes
    return -w0 * sim + w1 * var


def select_channels(criterion: Tensor, k: int) -> Tensor:
    """[S, k] indices of the k largest criterion values per seed, largest first."""
    return torch.topk(criterion, k, dim=-1).indices


def refine(x: Tensor, channels: Tensor, valid: Tensor, what: str) -> Tensor:
    """n(x restricted to `channels`): x [S, N, D], channels [S, k] -> [S, N, k]; rows where `valid`
    (broadcast to [S, N]) is False stay zero."""
    picked = x.gather(-1, channels.unsqueeze(1).expand(-1, x.shape[1], -1))
    return normalize_rows(picked, valid, f"{what} (on APE's kept channels)")
