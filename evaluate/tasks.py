"""From a cache to a FewShotTask (S seeds batched) and, separately, the test queries.

The support set is CoOp's few-shot sample (cache.fewshot.coop_fewshot_indices) of the cache's train split,
whose row order is the split file's order. Validation depends on the protocol (METHOD.md §6):

- `clean`: min(K, 4) shots per class from the val split with the same seed (the sampler's val list); a
  cache without a val split (ImageNet: train/test only) draws them, with the same sampler and seed, from
  the train images not in the support set. The test split is never read while fitting.
- `paper`: the full val split, shared by all seeds ([1, Nv, D]); without a val split the test split
  stands in (the paper's test leak): `meta["val_is_test"]` is then True and every output flags it.

Test queries are loaded by `load_test`, only for the final score.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import torch
from torch import Tensor

from clipbridge.bridge.task import FewShotTask
from clipbridge.cache.errors import ClipBridgeError
from clipbridge.cache.fewshot import coop_fewshot_indices, fewshot_grid

PROTOCOLS = ("clean", "paper")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
CLEAN_VAL_SHOTS = 4


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available else cpu; 'cpu' / 'cuda' / 'cuda:N' as given (cuda must exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ClipBridgeError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ClipBridgeError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}") from None


class SplitLoader:
    """Loads each split of one cache once (bench reuses them across shot counts and methods)."""

    def __init__(self, cache) -> None:
        self.cache = cache
        self._splits: dict[str, Any] = {}

    def __call__(self, name: str):
        if name not in self._splits:
            self._splits[name] = self.cache.split(name)
        return self._splits[name]

    def has(self, name: str) -> bool:
        return name in self.cache.splits


def cache_identity(cache) -> dict[str, str]:
    """dataset / model / pretrained / cache path / cache id of a cache, as recorded in runs and results."""
    attrs = cache.attrs
    return {"dataset": str(attrs.get("dataset", "unknown")), "model": str(attrs.get("model", "unknown")),
            "pretrained": str(attrs.get("pretrained", "unknown")), "cache": str(cache.path),
            "cache_id": str(cache.cache_id)}


def build_fit_task(cache, *, shots: int, seeds: Sequence[int], views: int = 1,
                   prompt_sets: Sequence[str] | None = None, protocol: str = "clean", device: str = "cpu",
                   dtype: str = "float32", loader: SplitLoader | None = None) -> tuple[FewShotTask, dict]:
    """The task every method fits on, and its meta (no test data is read, except `paper` without val).

    Returns FewShotTask(support [S, C, K·V, D] class-major with index k·V + v, support_mask [C, K·V],
    val [S, Nv, D] (clean) or [1, Nv, D] (paper), val_labels with -1 padding) and a JSON-able meta dict.
    """
    loader = loader or SplitLoader(cache)
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ClipBridgeError("no seeds given")
    if protocol not in PROTOCOLS:
        raise ClipBridgeError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    target_device, target_dtype = resolve_device(device), resolve_dtype(dtype)
    where = f"cache {cache.path}"
    if "train" not in cache.splits:
        raise ClipBridgeError(f"{where} has no train split (an OOD test-only cache cannot be fitted on)")
    num_classes = len(cache.classnames)
    train = loader("train")
    train_labels = train.labels.tolist()
    short = _check_shots(shots, train_labels, cache.classnames, where)
    if not 1 <= views <= train.views:
        raise ClipBridgeError(f"--views {views}: {where} stores {train.views} view(s) per train image")
    sets = list(prompt_sets) if prompt_sets else list(cache.text_sets)
    unknown = [s for s in sets if s not in cache.text_sets]
    if unknown:
        raise ClipBridgeError(f"prompt set(s) {unknown} not in {where}; it has {', '.join(cache.text_sets)}")

    has_val = loader.has("val")
    val_labels = loader("val").labels.tolist() if has_val else None
    support_rows, heldout_rows = [], []
    for seed in seeds:
        if has_val:
            picked = coop_fewshot_indices(train_labels, val_labels, shots, seed)
            support_rows.append(picked["train"])
            heldout_rows.append(picked["val"])
        else:
            first = coop_fewshot_indices(train_labels, train_labels, shots, seed)["train"]
            taken = set(first)
            remaining = [i for i in range(len(train_labels)) if i not in taken]
            picked = coop_fewshot_indices(train_labels, [train_labels[i] for i in remaining], shots, seed)
            support_rows.append(picked["train"])
            heldout_rows.append([remaining[i] for i in picked["val"]])

    support, mask = _gather_support(train.embedding, support_rows, train_labels, num_classes, shots, views)
    val_is_test = False
    if protocol == "clean":
        source = loader("val") if has_val else train
        val_source = "val" if has_val else "train-heldout"
        val, val_y = _padded_queries(source, heldout_rows)
    elif has_val:
        split = loader("val")
        val, val_y, val_source = split.embedding[None, :, 0], split.labels[None], "val-full"
    else:
        split = loader("test")
        val, val_y, val_source, val_is_test = split.embedding[None, :, 0], split.labels[None], "test", True

    text = cache.text(sets)
    task = FewShotTask(
        support=support, support_mask=mask,
        text_projected=text.projected, text_eos=text.eos, text_class=text.classes.long(),
        text_projection=cache.text_projection, logit_scale=float(cache.logit_scale),
        text_projection_bias=cache.text_projection_bias,
        val=val, val_labels=val_y.long(), views=views, seeds=seeds,
    ).to(device=target_device, dtype=target_dtype)
    meta = {**cache_identity(cache), "shots": int(shots), "seeds": list(seeds), "views": int(views),
            "prompt_sets": sets, "protocol": protocol, "val_source": val_source, "val_is_test": val_is_test,
            "device": str(target_device), "dtype": dtype, "num_classes": num_classes,
            "short_classes": short}
    return task, meta


def load_test(cache, *, device: str = "cpu", dtype: str = "float32",
              loader: SplitLoader | None = None) -> tuple[Tensor, Tensor]:
    """Test queries [N, D] (view 0, raw) and labels [N] int64 of the cache's test split."""
    loader = loader or SplitLoader(cache)
    if not loader.has("test"):
        raise ClipBridgeError(f"cache {cache.path} has no test split")
    split = loader("test")
    queries = split.embedding[:, 0].to(device=resolve_device(device), dtype=resolve_dtype(dtype))
    return queries, split.labels.long().to(queries.device)


def build_task(cache, *, shots: int, seeds: Sequence[int], views: int = 1,
               prompt_sets: Sequence[str] | None = None, protocol: str = "clean", device: str = "cpu",
               dtype: str = "float32") -> tuple[FewShotTask, Tensor, Tensor, dict]:
    """The contract's one-call form: (task, test queries [N, D], test labels [N], meta).

    Commands use `build_fit_task` then `load_test` after fitting, so the test split is not even read
    before the final score; this form is for callers that want everything at once.
    """
    loader = SplitLoader(cache)
    task, meta = build_fit_task(cache, shots=shots, seeds=seeds, views=views, prompt_sets=prompt_sets,
                                protocol=protocol, device=device, dtype=dtype, loader=loader)
    queries, labels = load_test(cache, device=device, dtype=dtype, loader=loader)
    return task, queries, labels, meta


def _check_shots(shots: int, labels: list[int], classnames: list[str], where: str) -> dict[str, int]:
    """Validate K against the train split; returns {classname: images} for classes with fewer than K."""
    counts = Counter(labels)
    empty = [classnames[c] for c in range(len(classnames)) if counts.get(c, 0) == 0]
    if empty:
        raise ClipBridgeError(f"class {empty[0]!r} has no train images in {where}")
    largest = max(counts.values())
    if shots < 1 or shots > largest:
        raise ClipBridgeError(f"--shots {shots} is out of range: {where} has 1 to {largest} train images "
                              f"per class")
    return {classnames[c]: counts[c] for c in range(len(classnames)) if counts[c] < shots}


def _gather_support(embedding: Tensor, picked: list[list[int]], labels: Sequence[int], num_classes: int,
                    shots: int, views: int) -> tuple[Tensor, Tensor]:
    """[S, C, K·V, D] support (shot-major then view) and its [C, K·V] mask from the rows each seed picked.

    Rows are placed class-major by cache.fewshot.fewshot_grid (shot k = the class's k-th pick). A class with
    n < K images fills its empty slots with its first row, masked False (CoOp keeps all n; the sampler picks
    min(n, K) rows per class for every seed, so the mask is the same for all seeds).
    """
    grids = [fewshot_grid(rows, labels, num_classes, shots) for rows in picked]
    index = torch.stack([torch.from_numpy(grid) for grid, _ in grids])                # [S, C, K], -1 empty
    index = torch.where(index >= 0, index, index[..., :1].clamp_min(0))
    gathered = embedding[index][:, :, :, :views]                                     # [S, C, K, V, D]
    support = gathered.reshape(len(picked), num_classes, shots * views, embedding.shape[-1])
    mask = torch.from_numpy(grids[0][1]).repeat_interleave(views, dim=1)
    return support, mask


def _padded_queries(split, per_seed: list[list[int]]) -> tuple[Tensor, Tensor]:
    """View-0 queries [S, Nv, D] of the given rows per seed; ragged seeds padded (label -1)."""
    longest = max(len(rows) for rows in per_seed)
    if longest == 0:
        raise ClipBridgeError("no validation queries could be drawn (every class used all its images)")
    index = torch.zeros(len(per_seed), longest, dtype=torch.long)
    labels = torch.full((len(per_seed), longest), -1, dtype=torch.long)
    for s, rows in enumerate(per_seed):
        if rows:
            index[s] = torch.tensor(rows + [rows[0]] * (longest - len(rows)))
            labels[s, : len(rows)] = split.labels[torch.tensor(rows)].long()
    return split.embedding[index, 0], labels
