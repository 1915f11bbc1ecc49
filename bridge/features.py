"""Feature preparation shared by the baselines: working dtype, normalised support views, shot keys,
validation and test queries, and row-chunked evaluation for large query sets.

Shapes: S seeds, C classes, K shots, V views per shot, K' = K·V, D embedding size, N queries.
Padded support views (task.support_mask False) and padded validation rows (label -1) may hold anything,
zeros included: they are zeroed here and excluded by masks; a zero vector among *real* rows is a
BridgeInputError naming where it is.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.ops import as_seed_batch
from clipbridge.bridge.registry import check_hparams
from clipbridge.bridge.text import class_text

# Elements of the largest intermediate tensor a chunked evaluation may build (2^25 floats = 128 MiB fp32).
CHUNK_ELEMENTS = 1 << 25


def work_dtype(task) -> torch.dtype:
    """float64 when the task is float64, float32 otherwise (half-precision caches are upcast)."""
    return torch.float64 if task.support.dtype == torch.float64 else torch.float32


def begin_fit(method, task, hparams: dict) -> tuple[dict, float, torch.dtype, Tensor]:
    """The common start of a baseline's fit: (hyper-parameters checked against method.defaults, the start
    time for fit_seconds, the working dtype, the class text prototypes T̄ [C, D] in that dtype)."""
    hp = check_hparams(method, hparams)
    started = time.perf_counter()
    dtype = work_dtype(task)
    return hp, started, dtype, class_text(task, dtype).projected


def normalize_rows(x: Tensor, valid: Tensor, what: str, normalize: bool = True) -> Tensor:
    """n(x) over the last dim where `valid` (broadcast to x.shape[:-1]) is True; zeros elsewhere.
    normalize=False keeps the valid rows raw (same checks, same zeroing).

    A zero vector in a valid row raises BridgeInputError naming `what` and the row.
    """
    valid = valid.expand(x.shape[:-1])
    norm = x.norm(dim=-1)
    bad = valid & (norm == 0)
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise BridgeInputError(f"{what} holds an all-zero embedding at index {list(where)}")
    safe = torch.where(valid, norm, torch.ones_like(norm)) if normalize else torch.ones_like(norm)
    return torch.where(valid.unsqueeze(-1), x / safe.unsqueeze(-1), torch.zeros_like(x))


@dataclass(frozen=True)
class SupportViews:
    """Every support view, flattened class-major.

    x       [S, C·K', D] normalised views n(f) (raw f when asked); padded views are zero vectors
    labels  [C·K'] int64 class of each view
    mask    [C·K'] bool, True for real views
    """

    x: Tensor
    labels: Tensor
    mask: Tensor


def support_views(task, dtype: torch.dtype, normalize: bool = True) -> SupportViews:
    """All support views n(f) (raw f with normalize=False) with their labels and mask (padded views zeroed)."""
    s, c, k, d = task.support.shape
    mask = task.support_mask.reshape(c * k)
    x = normalize_rows(task.support.to(dtype).reshape(s, c * k, d), mask, "support", normalize)
    return SupportViews(x=x, labels=task.support_labels, mask=mask)


def shot_keys(task, dtype: torch.dtype) -> SupportViews:
    """One key per shot: n(mean of the shot's raw views), Tip-Adapter's cache keys.

    Returns SupportViews with x [S, C·K, D], labels [C·K], mask [C·K] (a shot is real when any of its views
    is; padded shots are zero keys).
    """
    s, c, kv, d = task.support.shape
    v = task.views
    view_mask = task.support_mask.reshape(c, kv // v, v)
    weight = view_mask.to(dtype).unsqueeze(-1)                                     # [C, K, V, 1]
    summed = (task.support.to(dtype).reshape(s, c, kv // v, v, d) * weight).sum(3)  # [S, C, K, D]
    mean = summed / weight.sum(2).clamp_min(1)
    mask = view_mask.any(-1).reshape(-1)
    keys = normalize_rows(mean.reshape(s, -1, d), mask, "support (mean of a shot's views)")
    labels = torch.arange(c, device=task.support.device).repeat_interleave(kv // v)
    return SupportViews(x=keys, labels=labels, mask=mask)


def validation(task, dtype: torch.dtype, normalize: bool = True) -> tuple[Tensor, Tensor]:
    """Normalised (raw with normalize=False) validation queries [S, Nv, D] and labels [S, Nv] (-1 rows are
    zero vectors)."""
    s = task.num_seeds
    labels = task.val_labels.expand(s, -1)
    val = task.val.to(dtype).expand(s, -1, -1)
    return normalize_rows(val, labels >= 0, "val", normalize), labels


def prepare_queries(queries: Tensor, num_seeds: int, like: Tensor, dim: int | None = None,
                    normalize: bool = True) -> Tensor:
    """Raw queries [N, D] or [S|1, N, D] -> normalised (kept raw with normalize=False) [S, N, D] on the
    device and dtype of `like`; D must equal `dim` (default like.shape[-1])."""
    q = as_seed_batch(queries, num_seeds).to(device=like.device, dtype=like.dtype)
    dim = like.shape[-1] if dim is None else dim
    if q.shape[-1] != dim:
        raise BridgeInputError(f"queries have dimension {q.shape[-1]}, the fitted method expects {dim}")
    return normalize_rows(q, torch.ones((), dtype=torch.bool, device=q.device), "queries", normalize)


def chunked(fn: Callable[[Tensor], Tensor], x: Tensor, elements_per_row: int, dim: int = 1,
            out_dim: int | None = None) -> Tensor:
    """fn over slices of x along `dim`, results concatenated along `out_dim` (default `dim`); slices sized
    so that one slice's largest intermediate (elements_per_row per slice row) stays under CHUNK_ELEMENTS."""
    rows = x.shape[dim]
    step = max(1, CHUNK_ELEMENTS // max(1, elements_per_row))
    if step >= rows:
        return fn(x)
    parts = [fn(x.narrow(dim, i, min(step, rows - i))) for i in range(0, rows, step)]
    return torch.cat(parts, dim=dim if out_dim is None else out_dim)
