"""What one extraction stores: per split, the images (rows of its whole list) and the view families each
gets; and, when the cache already exists, what it adds to it.

Every stored image gets the plain view; the few-shot support images of the train split (all train images
when the coverage is "every image") also get the augmented families asked for. Extending a finished cache
(another seed, another family, another prompt set) plans the union of what it holds and what is asked,
copies what it holds and encodes only the rest.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipbridge.cache.coverage import Coverage, plan_rows
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.schema import IDENTITY_ATTRS, list_fingerprint
from clipbridge.extract.datasets.registry import DatasetSpec
from clipbridge.extract.prompts import PromptSet
from clipbridge.extract.views import PLAIN, get_family


@dataclass(frozen=True)
class SplitPlan:
    """One split: list_labels [L] of its whole list and its fingerprint; rows [N] sorted list indices to
    store, with labels [N] and item names [N]; families {name: positions [M] into rows, sorted}."""

    list_labels: np.ndarray
    fingerprint: str
    rows: np.ndarray
    labels: np.ndarray
    names: list[str]
    families: dict[str, np.ndarray]


@dataclass
class ExtractionPlan:
    """coverage and augmented families the finished cache will hold; splits; `base`, the finished cache
    being extended (None for a new one); `copied_sets` the base's prompt sets kept as they are; `up_to_date`
    when the base already holds everything asked for."""

    coverage: Coverage
    families: tuple[str, ...]
    splits: dict[str, SplitPlan]
    prompt_sets: list[PromptSet]
    base: Any = None
    copied_sets: list[str] = field(default_factory=list)
    up_to_date: bool = False


def plan_extraction(spec: DatasetSpec, prompt_sets: list[PromptSet], coverage: Coverage, families: tuple[str, ...],
                    attrs: dict[str, Any], out: Path, overwrite: bool) -> ExtractionPlan:
    """The plan for writing `out`: new, or (out finished and not overwrite) the union with what it holds."""
    augmented = tuple(dict.fromkeys(f for f in families if f != PLAIN))
    for name in augmented:
        get_family(name)
    base = _base_cache(out, attrs) if out.exists() and not overwrite else None
    copied: list[str] = []
    up_to_date = False
    if base is not None:
        held = [f for f in base.families("train") if f != PLAIN] if "train" in base.splits else []
        wanted_sets = {s.name for s in prompt_sets}
        _check_same_prompts(base, prompt_sets)
        up_to_date = (base.coverage.contains(coverage) and set(augmented) <= set(held)
                      and wanted_sets <= set(base.text_sets))
        coverage = base.coverage.union(coverage)
        augmented = tuple(dict.fromkeys(held + list(augmented)))
        copied = [name for name in base.text_sets if name not in wanted_sets]
    labels = {split: np.array([label for _, label in items], dtype=np.int64) for split, items in spec.splits.items()}
    row_plans = plan_rows(labels, coverage)
    splits = {}
    for split, items in spec.splits.items():
        names = [spec.item_name(item) for item, _ in items]
        plan = row_plans[split]
        rows = plan.rows
        families = {PLAIN: np.arange(rows.size)}
        if plan.support.size:
            support = np.searchsorted(rows, plan.support)
            families.update({name: support for name in augmented})
        splits[split] = SplitPlan(labels[split], list_fingerprint(names, labels[split]), rows, labels[split][rows],
                                  [names[i] for i in rows], families)
    if base is not None:
        _check_same_lists(base, splits)
    return ExtractionPlan(coverage, augmented, splits, prompt_sets, base, copied, up_to_date)


def _base_cache(out: Path, attrs: dict[str, Any]):
    """The finished cache at `out` to extend, after checking it was made by the same model and data."""
    from clipbridge.cache.reader import open_cache

    base = open_cache(out)
    if base.version < 2:
        raise ClipBridgeError(f"{out} was written by an older clipbridge (format version {base.version}) and cannot "
                              "be extended; pass --overwrite to extract it again")
    differing = [key for key in IDENTITY_ATTRS if str(base.attrs.get(key, "")) != str(attrs.get(key, ""))]
    if differing == ["pretrained"] and str(base.attrs.get("pretrained_sha256", "") or ""):
        differing = []                # the same weights (SHA-256) under another name: an alias (cache.weights)
    if differing:
        detail = ", ".join(f"{key} {base.attrs.get(key)!r} (now {attrs.get(key)!r})" for key in differing)
        raise ClipBridgeError(f"{out} already exists with other settings: {detail}; pass --overwrite to replace it "
                              "or --out to write another file")
    return base


def _check_same_prompts(base, prompt_sets: list[PromptSet]) -> None:
    for prompt_set in prompt_sets:
        if prompt_set.name in base.text_sets and base.text(prompt_set.name).prompts != prompt_set.prompts:
            raise ClipBridgeError(f"{base.path} holds prompt set {prompt_set.name!r} with other prompts; pass "
                                  "--overwrite to extract everything again")


def _check_same_lists(base, splits: dict[str, SplitPlan]) -> None:
    if set(base.splits) != set(splits):
        raise ClipBridgeError(f"{base.path} holds splits {', '.join(base.splits)}, the dataset has "
                              f"{', '.join(splits)}; pass --overwrite to extract it again")
    for split, plan in splits.items():
        if not np.array_equal(base.list_labels(split), plan.list_labels):
            raise ClipBridgeError(f"{base.path}: the {split} list differs from the dataset's (another split file?); "
                                  "pass --overwrite to extract it again")


def base_positions(base, split: str, family: str, plan: SplitPlan) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `family` the base cache holds, as (positions in the base family [n], positions in the new
    family [n]); empty when the base lacks the family."""
    if family not in base.families(split):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    source = base.rows(split).source[base.family(split, family).rows]       # whole-list indices
    return np.arange(source.size), np.searchsorted(plan.rows[plan.families[family]], source)
