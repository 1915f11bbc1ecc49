"""The one input every method fits on: cached tensors for S seeds at once, nothing else.

Shapes use S seeds, C classes, K' = K·V support views per class (K shots × V views, shot-major:
index k·V + v), P prompts, D joint embedding size, W text width, Nv validation queries.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.ops import all_finite

#: The optional input "EOS features and the text projection" (text_eos, text_projection); see `needs` in
#: bridge.registry.
EOS = "eos"
OPTIONAL_INPUTS = {EOS: "the text encoder's pre-projection EOS features and its projection Wt"}


@dataclass(frozen=True)
class FewShotTask:
    """Everything a method may see while fitting. Test queries and labels are never part of it.

    support          [S, C, K', D] raw (un-normalised) image embeddings, class-major
    support_mask     [C, K'] bool, True where a view is real; False pads classes that had fewer than
                     K images (CoOp keeps all a class has). Shared by all seeds. K' = 0 (support
                     [S, C, 0, D]): no support set, for a method that reads none (`reads_support = False`
                     in bridge.registry; every other method refuses such a task, `require_inputs`).
    text_projected   [P, D] per-prompt projected text embeddings t = e·Wt + b (not normalised)
    text_eos         [P, W] per-prompt pre-projection EOS features e (the text tower's pooled feature), or
                     None when the cache holds none (a text tower that does not end in pooling + a linear
                     or affine projection); methods that need them declare `needs = {"eos"}`
    text_class       [P] int64 class index of each prompt
    text_projection  [W, D] Wt, CLIP's frozen text projection (None exactly when text_eos is None)
    logit_scale      τ = exp(CLIP's logit_scale), a float (100 for OpenAI CLIP)
    val              [S or 1, Nv, D] raw validation queries (view 0); 1 broadcasts over seeds
    val_labels       [S or 1, Nv] int64; -1 marks padding that accuracy ignores
    views            V, views per shot inside K'
    seeds            the S seeds, used to seed any randomness of a method (one generator per seed)
    text_projection_bias  [D] b of an affine text projection t = e·Wt + b (SigLIP), or None = zero
    """

    support: Tensor
    support_mask: Tensor
    text_projected: Tensor
    text_eos: Tensor
    text_class: Tensor
    text_projection: Tensor
    logit_scale: float
    val: Tensor
    val_labels: Tensor
    views: int = 1
    seeds: tuple[int, ...] = (1,)
    text_projection_bias: Tensor | None = None

    def __post_init__(self) -> None:
        validate_task(self)

    @property
    def num_seeds(self) -> int:
        return self.support.shape[0]

    @property
    def num_classes(self) -> int:
        return self.support.shape[1]

    @property
    def dim(self) -> int:
        return self.support.shape[-1]

    @property
    def has_support(self) -> bool:
        """False for a task built without a support set (K' = 0)."""
        return self.support.shape[2] > 0

    @property
    def width(self) -> int | None:
        """W, the EOS width (None without EOS features)."""
        return None if self.text_eos is None else self.text_eos.shape[-1]

    @property
    def inputs(self) -> frozenset[str]:
        """The optional inputs this task holds (OPTIONAL_INPUTS), matched against a method's `needs`."""
        return frozenset({EOS} if self.text_eos is not None else ())

    @property
    def support_labels(self) -> Tensor:
        """[C·K'] int64 class-major labels of the flattened support views (padding included)."""
        c, k = self.support_mask.shape
        return torch.arange(c, device=self.support.device).repeat_interleave(k)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "FewShotTask":
        """A copy with float tensors moved/cast (integer and bool tensors keep their dtype)."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                cast = dtype if (dtype is not None and value.is_floating_point()) else None
                changes[f.name] = value.to(device=device, dtype=cast)
        return replace(self, **changes)


def validate_task(task: FewShotTask) -> None:
    """Raise BridgeInputError naming the first inconsistent or non-finite input."""
    s, c, k, d = _shape(task.support, 4, "support")
    if tuple(task.support_mask.shape) != (c, k) or task.support_mask.dtype != torch.bool:
        raise BridgeInputError(f"support_mask must be bool [{c}, {k}], got {task.support_mask.dtype} "
                               f"{list(task.support_mask.shape)}")
    if k and not bool(task.support_mask.any(dim=1).all()):
        empty = int((~task.support_mask.any(dim=1)).nonzero()[0])
        raise BridgeInputError(f"class {empty} has no support images")
    p, _ = _shape(task.text_projected, 2, "text_projected")
    if tuple(task.text_projected.shape) != (p, d):
        raise BridgeInputError(f"text_projected must be [{p}, {d}], got {list(task.text_projected.shape)}")
    if tuple(task.text_class.shape) != (p,):
        raise BridgeInputError(f"text_class must be [{p}], got {list(task.text_class.shape)}")
    if p and (int(task.text_class.min()) < 0 or int(task.text_class.max()) >= c):
        raise BridgeInputError(f"text_class holds class indices outside [0, {c})")
    missing = set(range(c)) - set(task.text_class.tolist())
    if missing:
        raise BridgeInputError(f"classes without any prompt: {sorted(missing)[:5]}")
    _validate_text_head(task, p, d)
    sv, nv, dv = _shape(task.val, 3, "val")
    if sv not in (1, s) or dv != d:
        raise BridgeInputError(f"val must be [{s} or 1, Nv, {d}], got {list(task.val.shape)}")
    if tuple(task.val_labels.shape) != (sv, nv):
        raise BridgeInputError(f"val_labels must be [{sv}, {nv}], got {list(task.val_labels.shape)}")
    if nv and int(task.val_labels.max()) >= c:
        raise BridgeInputError(f"val_labels hold class indices >= {c}")
    if len(task.seeds) != s:
        raise BridgeInputError(f"{len(task.seeds)} seeds given for a support tensor of {s} seeds")
    if task.views < 1 or k % task.views:
        raise BridgeInputError(f"K'={k} support views is not a multiple of views={task.views}")
    if not task.logit_scale > 0:
        raise BridgeInputError(f"logit_scale must be positive, got {task.logit_scale}")
    for name in ("support", "text_projected", "text_eos", "text_projection", "text_projection_bias", "val"):
        value = getattr(task, name)
        if value is not None and not all_finite(value):
            raise BridgeInputError(f"{name} holds NaN or Inf values")


def _validate_text_head(task: FewShotTask, p: int, d: int) -> None:
    """text_eos [P, W] and text_projection [W, D] both present or both None; the bias [D] or None."""
    if (task.text_eos is None) != (task.text_projection is None):
        raise BridgeInputError("text_eos and text_projection must be given together (or both None)")
    if task.text_eos is not None:
        _, w = _shape(task.text_eos, 2, "text_eos")
        if task.text_eos.shape[0] != p:
            raise BridgeInputError(f"text_eos must be [{p}, W], got {list(task.text_eos.shape)}")
        if tuple(_shape(task.text_projection, 2, "text_projection")) != (w, d):
            raise BridgeInputError(f"text_projection must be [W={w}, D={d}], got {list(task.text_projection.shape)}")
    if task.text_projection_bias is not None and tuple(_shape(task.text_projection_bias, 1,
                                                              "text_projection_bias")) != (d,):
        raise BridgeInputError(f"text_projection_bias must be [{d}], got {list(task.text_projection_bias.shape)}")


def _shape(value: Tensor, ndim: int, name: str) -> tuple[int, ...]:
    if not isinstance(value, Tensor) or value.ndim != ndim:
        got = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise BridgeInputError(f"{name} must be a {ndim}-d tensor, got {got}")
    return tuple(value.shape)
