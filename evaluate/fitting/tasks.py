"""From a cache to a FewShotTask (S seeds batched) and, separately, the test queries.

The support set is CoOp's few-shot draw (cache.fewshot.draw_fewshot) from the train split's whole list;
each support image contributes the views of the view families asked for, concatenated in that order (e.g.
("plain", "flip") gives V = 2: the image, then its mirror). Validation depends on the protocol
(METHOD.md §6):

- `clean`: min(K, 4) shots per class from the val split with the same seed (the sampler's val list); a
  dataset without a val split (ImageNet: train/test only) draws them, with the same sampler and seed, from
  the train images not in the support set. The test split is never read while fitting.
- `paper`: the full val split, shared by all seeds ([1, Nv, D]); without a val split the test split
  stands in (the paper's test leak): `meta["val_is_test"]` is then True and every output flags it.

A recipe may fix its validation whatever the protocol (bridge.recipes.Recipe.validation): "sampled" is the
clean protocol's min(K, 4) draw under `paper` too (lpclip, the linear probe's paper recipe, validates on
min(K, 4) images per class, RECIPES.md §2.6); `meta["validation"]` records which rule ran.

Validation and test queries are plain views. A cache holding only sampled images (extract --shots/--seeds)
must cover every (shots, seed) asked for; otherwise the error names the extract command that adds it. A
task for a method that reads no support set (bridge.registry.reads_support: zero-shot) is built without
one (`support=False`, K' = 0): it needs only each pair's validation draw, which a cache extracted with the
whole val split holds for any pair.
Test queries are loaded by `load_test`, only for the final score.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from clipbridge.bridge.devices import resolve_device
from clipbridge.bridge.recipes import parse_family
from clipbridge.bridge.recipes.resolve import PROTOCOL_VALIDATION, SAMPLED_VALIDATION, VALIDATIONS, add_text_options
from clipbridge.bridge.task import FewShotTask
from clipbridge.cache.coverage import extract_hint
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.options import PROTOCOLS
from clipbridge.cache.fewshot import FewShotDraw, check_shot_count, draw_fewshot, fewshot_grid
from clipbridge.cache.reader import sorted_positions

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_FAMILIES = ("plain",)


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ClipBridgeError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}") from None


class SplitLoader:
    """Reads each split's row table, whole-list labels and plain views of one cache once (bench reuses them
    across shot counts and methods)."""

    def __init__(self, cache) -> None:
        self.cache = cache
        self._memo: dict[tuple, Any] = {}

    def _get(self, key: tuple, read):
        if key not in self._memo:
            self._memo[key] = read()
        return self._memo[key]

    def has(self, name: str) -> bool:
        return name in self.cache.splits

    def rows(self, split: str):
        return self._get(("rows", split), lambda: self.cache.rows(split))

    def list_labels(self, split: str) -> list[int]:
        return self._get(("list", split), lambda: self.cache.list_labels(split).tolist())

    def plain(self, split: str) -> tuple[Tensor, Tensor, list[str]]:
        """Plain views [N, D], labels [N] and paths of the split's readable images."""
        return self._get(("plain", split), lambda: self.cache.plain(split))


def cache_identity(cache) -> dict[str, str]:
    """dataset / model / pretrained / cache path / cache id of a cache, as recorded in runs and results."""
    attrs = cache.attrs
    return {"dataset": str(attrs.get("dataset", "unknown")), "model": str(attrs.get("model", "unknown")),
            "pretrained": str(attrs.get("pretrained", "unknown")), "cache": str(Path(cache.path).resolve()),
            "cache_id": str(cache.cache_id)}


def build_fit_task(cache, *, shots: int, seeds: Sequence[int], families: Sequence[str] = DEFAULT_FAMILIES,
                   prompt_sets: Sequence[str] | None = None, protocol: str = "clean", device: str = "cpu",
                   dtype: str = "float32", loader: SplitLoader | None = None,
                   validation: str = PROTOCOL_VALIDATION, support: bool = True) -> tuple[FewShotTask, dict]:
    """The task every method fits on, and its meta (no test data is read, except `paper` without val).

    Returns FewShotTask(support [S, C, K·V, D] class-major with index k·V + v (V = the families' copies
    together), support_mask [C, K·V] (support=False: [S, C, 0, D] and [C, 0], no support image read), val
    [S, Nv, D] (clean, or validation "sampled") or [1, Nv, D] (paper),
    val_labels with -1 padding) and a JSON-able meta dict.
    """
    loader = loader or SplitLoader(cache)
    seeds = tuple(int(s) for s in seeds)
    families = tuple(families)
    if not seeds:
        raise ClipBridgeError("no seeds given")
    if not families:
        raise ClipBridgeError("no view family given")
    if protocol not in PROTOCOLS:
        raise ClipBridgeError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    if validation not in VALIDATIONS:
        raise ClipBridgeError(f"unknown validation rule {validation!r}; use one of {', '.join(VALIDATIONS)}")
    val_protocol = "clean" if validation == SAMPLED_VALIDATION else protocol
    target_device, target_dtype = resolve_device(device), resolve_dtype(dtype)
    where = f"cache {cache.path}"
    if "train" not in cache.splits:
        raise ClipBridgeError(f"{where} has no train split (an OOD test-only cache cannot be fitted on)")
    num_classes = len(cache.classnames)
    train_list = loader.list_labels("train")
    short = check_shot_count(shots, train_list, cache.classnames, where)
    check_coverage(cache, [shots], seeds, families, val_protocol, support=support, loader=loader)
    sets = list(prompt_sets) if prompt_sets else list(cache.text_sets)
    unknown = [s for s in sets if s not in cache.text_sets]
    if unknown:
        raise ClipBridgeError(f"prompt set(s) {unknown} not in {where}; it has {', '.join(cache.text_sets)}")

    has_val = loader.has("val")
    val_list = loader.list_labels("val") if has_val else None
    draws = [draw_fewshot(train_list, val_list, shots, seed) for seed in seeds]
    text = cache.text(sets)
    if support:
        support_views, mask, views = _gather_support(cache, loader, draws, train_list, num_classes, shots, families)
    else:
        support_views = torch.zeros(len(seeds), num_classes, 0, text.projected.shape[-1])
        mask = torch.zeros(num_classes, 0, dtype=torch.bool)
        views = sum(_family_width(cache, spec) for spec in families)
    val_is_test = False
    if val_protocol == "clean":
        val, val_y = _padded_queries(cache, loader, draws)
        val_source = "val" if has_val else "train-heldout"
    else:
        split = "val" if has_val else "test"
        queries, labels, _ = loader.plain(split)
        val, val_y = queries[None], labels[None]
        val_source, val_is_test = ("val-full", False) if has_val else ("test", True)

    task = FewShotTask(
        support=support_views, support_mask=mask,
        text_projected=text.projected, text_eos=text.eos, text_class=text.classes.long(),
        text_projection=cache.text_projection, logit_scale=float(cache.logit_scale),
        text_projection_bias=cache.text_projection_bias,
        val=val, val_labels=val_y.long(), views=views, seeds=seeds,
    ).to(device=target_device, dtype=target_dtype)
    meta = {**cache_identity(cache), "shots": int(shots), "seeds": list(seeds), "views": int(views),
            "view_families": list(families), "prompt_sets": sets, "protocol": protocol,
            "validation": validation, "val_source": val_source, "val_is_test": val_is_test,
            "device": str(target_device), "dtype": dtype,
            "num_classes": num_classes, "short_classes": short}
    return task, meta


def check_coverage(cache, shots: Sequence[int], seeds: Sequence[int], families: Sequence[str],
                   protocol: str, *, support: bool = True, loader: SplitLoader | None = None) -> None:
    """Refuse, with the extract command that adds them, (shots, seed) pairs (their validation draws only,
    when support is False), view families or the whole val split (protocol paper) the cache does not hold."""
    check_pairs(cache, shots, seeds, protocol, support=support, loader=loader)
    check_families(cache, families)


def check_pairs(cache, shots: Sequence[int], seeds: Sequence[int], protocol: str, *, support: bool = True,
                loader: SplitLoader | None = None) -> None:
    """Refuse (shots, seed) pairs, or protocol paper's whole val split, that the cache does not hold. With
    support False (methods that read no support set) only the pairs' validation draws must be held."""
    coverage = cache.coverage
    missing = coverage.missing(shots, seeds)
    if missing and not support:
        _check_validation_draws(cache, missing, protocol, loader or SplitLoader(cache))
    elif missing:
        raise ClipBridgeError(f"cache {cache.path} holds the images of {coverage.describe()}, not "
                              f"{_shown_pairs(missing)}; add them with: {_add_pairs_hint(cache, missing)}")
    if protocol == "paper" and "val" in cache.splits and not coverage.whole_val:
        raise ClipBridgeError(
            f"protocol paper validates on the whole val split, but cache {cache.path} holds only the sampled "
            "val images (extracted for protocol clean); add the rest with: "
            + _pairs_hint(cache, coverage.pairs, protocols="clean,paper"))


def _check_validation_draws(cache, pairs: list[tuple[int, int]], protocol: str, loader: SplitLoader) -> None:
    """Refuse the (shots, seed) `pairs` whose clean validation draw (min(K, 4) per class, METHOD.md §6) the
    cache does not hold, naming them as validation images; protocol paper draws none (whole val, or test)."""
    if protocol == "paper":
        return
    train_list = loader.list_labels("train")
    val_list = loader.list_labels("val") if loader.has("val") else None
    absent, split = [], "val"
    for k, s in pairs:
        draw = draw_fewshot(train_list, val_list, k, s)
        split = draw.val_split
        _, held = sorted_positions(loader.rows(split).source, np.array(draw.val, dtype=np.int64))
        if not held.all():
            absent.append((k, s))
    if absent:
        raise ClipBridgeError(
            f"cache {cache.path} does not hold the validation images of {_shown_pairs(absent)} (min(K, 4) per "
            f"class drawn from its {split} split), which a method that reads no few-shot images still validates "
            f"on; add them with: {_add_pairs_hint(cache, absent)}")


def _shown_pairs(pairs: list[tuple[int, int]]) -> str:
    """'1-shot seed 2, 2-shot seed 1 ...': the first four (shots, seed) pairs."""
    return ", ".join(f"{k}-shot seed {s}" for k, s in pairs[:4]) + (" ..." if len(pairs) > 4 else "")


def _add_pairs_hint(cache, pairs: list[tuple[int, int]]) -> str:
    """The extract command that adds the images of (shots, seed) `pairs` to `cache`."""
    return _pairs_hint(cache, pairs, families=_augmented_families(cache))


def _pairs_hint(cache, pairs: Sequence[tuple[int, int]] | None, **options) -> str:
    """cache.coverage.extract_hint for `cache` at the shots and seeds of (shots, seed) `pairs` (None: every
    image), with its other `options` (families, protocols)."""
    return extract_hint(cache.extract_args, path=cache.path,
                        shots=None if pairs is None else sorted({k for k, _ in pairs}),
                        seeds=None if pairs is None else sorted({s for _, s in pairs}), **options)


def check_families(cache, families: Sequence[str]) -> None:
    """Refuse view families (specs "name" or "name:n") the cache's train split does not hold."""
    if "train" not in cache.splits:
        return
    stored = cache.families("train")
    absent = list(dict.fromkeys(parse_family(f)[0] for f in families if parse_family(f)[0] not in stored))
    if absent:
        raise ClipBridgeError(f"cache {cache.path} has no view family {', '.join(map(repr, absent))} (it has "
                              f"{', '.join(stored)}); {_add_families_hint(cache, absent)}")


def check_prompt_sets(cache, recipe) -> list[str]:
    """The text sets a resolved recipe (bridge.recipes.Recipe) fits with on `cache`; a required set the cache
    lacks (e.g. a paper recipe's `cupl:ape`) is refused in one line naming the extract command that adds it
    (extending the cache encodes only the new text; its images are copied)."""
    missing = recipe.missing_prompts(cache.text_sets)
    how = (extend_hint(cache, _augmented_families(cache) if "train" in cache.splits else None) + " "
           + add_text_options(missing)) if missing else None
    return recipe.prompt_sets(cache.text_sets, f"cache {cache.path}", how)


def extend_hint(cache, families: Sequence[str] | None) -> str:
    """The extract command that extends `cache` in place with view `families` (its held ones when they are
    all it needs), keeping its coverage: the same (shots, seeds) and, for a cache without the whole val
    split, protocol clean only (cache.coverage.extract_hint)."""
    pairs = cache.coverage.pairs
    protocols = "clean" if pairs is not None and not cache.coverage.whole_val else None
    return _pairs_hint(cache, pairs, families=list(families or ["plain"]), protocols=protocols)


def _add_families_hint(cache, absent: list[str]) -> str:
    """How to get the `absent` view families: the extract command that adds them, or, for a cache of the
    synthetic generator (which no image folder backs), the generator's command with them in --families."""
    from clipbridge.cache.synthetic import synthetic_command, synthetic_settings

    settings = synthetic_settings(cache.attrs)
    if settings is not None:
        from clipbridge.extract.views import get_family

        command = synthetic_command(settings, str(cache.attrs.get("dataset", "synthetic")), cache.path,
                                    {name: get_family(name).copies for name in absent})
        return f"this cache is synthetic: write it again with those views: {command}"
    return "add it with: " + extend_hint(cache, sorted(set(absent) | set(_augmented_families(cache))))


def _augmented_families(cache) -> list[str]:
    return [f for f in cache.families("train") if f != "plain"]


def load_test(cache, *, device: str = "cpu", dtype: str = "float32",
              loader: SplitLoader | None = None) -> tuple[Tensor, Tensor]:
    """Test queries [N, D] (plain view, raw) and labels [N] int64 of the cache's readable test images."""
    loader = loader or SplitLoader(cache)
    if not loader.has("test"):
        raise ClipBridgeError(f"cache {cache.path} has no test split")
    queries, labels, _ = loader.plain("test")
    queries = queries.to(device=resolve_device(device), dtype=resolve_dtype(dtype))
    return queries, labels.long().to(queries.device)


def check_shots(cache, shots: int, loader: SplitLoader | None = None) -> dict[str, int]:
    """Refuse a shot count outside 1 .. the largest train class of the cache; {classname: images} of the
    classes with fewer than `shots` images."""
    loader = loader or SplitLoader(cache)
    return check_shot_count(shots, loader.list_labels("train"), cache.classnames, f"cache {cache.path}")


def _cache_rows(cache, loader: SplitLoader, split: str, picks: np.ndarray, what: str) -> np.ndarray:
    """Rows of the cache's `split` holding the images at whole-list indices `picks` [n]; refuses an image
    the cache does not hold or that was unreadable at extraction."""
    rows = loader.rows(split)
    position, held = sorted_positions(rows.source, picks)
    if not held.all():
        raise ClipBridgeError(f"cache {cache.path} does not hold image {int(picks[~held][0])} of the {split} list "
                              f"({what}); extract the (shots, seed) pairs you fit")
    bad = rows.skipped[position]
    if bad.any():
        path = rows.paths[int(position[bad][0])]
        raise ClipBridgeError(f"image {path} ({what}) could not be read at extraction (--skip-bad left it out); "
                              "fix or replace the file and extract again (--overwrite)")
    return position


def _gather_support(cache, loader: SplitLoader, draws: list[FewShotDraw], train_list: list[int],
                    num_classes: int, shots: int, families: Sequence[str]) -> tuple[Tensor, Tensor, int]:
    """[S, C, K·V, D] support (shot-major then view), its [C, K·V] mask and V.

    Shots are placed class-major by cache.fewshot.fewshot_grid (shot k = the class's k-th pick). A class with
    n < K images fills its empty slots with its first shot, masked False (CoOp keeps all n; the sampler picks
    min(n, K) per class for every seed, so the mask is the same for all seeds).
    """
    grids = [fewshot_grid(draw.support, train_list, num_classes, shots) for draw in draws]
    index = np.stack([grid for grid, _ in grids])                                     # [S, C, K], -1 empty
    index = np.where(index >= 0, index, np.maximum(index[..., :1], 0))
    rows = _cache_rows(cache, loader, "train", index.reshape(-1), "a few-shot support image")
    parts = [_family_views(cache, spec, rows) for spec in families]                    # [S·C·K, E_f, D]
    views = sum(part.shape[1] for part in parts)
    support = torch.cat(parts, 1).reshape(len(draws), num_classes, shots * views, -1)
    mask = torch.from_numpy(grids[0][1]).repeat_interleave(views, dim=1)
    return support, mask, views


def _family_views(cache, spec: str, rows: np.ndarray) -> Tensor:
    """[n, E, D] views of a family spec for train rows (the first E = `n` copies of 'name:n', else all)."""
    return cache.views("train", parse_family(spec)[0], rows)[:, :_family_width(cache, spec)]


def _family_width(cache, spec: str) -> int:
    """E, the views per shot a family spec gives: n of 'name:n' (refused above the stored copies), else every
    stored copy."""
    name, count = parse_family(spec)
    copies = cache.family("train", name).copies
    if count is not None and count > copies:
        raise ClipBridgeError(f"view family {spec!r}: cache {cache.path} stores {copies} copies of {name!r}")
    return copies if count is None else count


def _padded_queries(cache, loader: SplitLoader, draws: list[FewShotDraw]) -> tuple[Tensor, Tensor]:
    """Plain views [S, Nv, D] of each seed's clean validation draw; ragged seeds padded (label -1)."""
    longest = max(len(draw.val) for draw in draws)
    if longest == 0:
        raise ClipBridgeError("no validation queries could be drawn (every class used all its images)")
    split = draws[0].val_split
    labels_list = loader.list_labels(split)
    fallback = next(draw.val[0] for draw in draws if draw.val)
    picks = np.array([draw.val[i % len(draw.val)] if draw.val else fallback for draw in draws
                      for i in range(longest)])
    rows = _cache_rows(cache, loader, split, picks, "a validation image")
    queries = cache.views(split, "plain", rows)[:, 0].reshape(len(draws), longest, -1)
    labels = torch.full((len(draws), longest), -1, dtype=torch.long)
    for s, draw in enumerate(draws):
        labels[s, :len(draw.val)] = torch.tensor([labels_list[i] for i in draw.val], dtype=torch.long)
    return queries, labels
