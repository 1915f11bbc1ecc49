"""Deterministic splits for datasets that come without a split file (documented, recorded in the cache).

Rule (split_source "seeded:<seed>:50/20/30"): per class, items sorted by name, shuffled with
random.Random(f"{seed}:{label}"), then the first 50% go to train, the next 20% to val, the rest to test
(CoOp's Caltech101/EuroSAT ratios). Rounding: n_train = round(0.5 n), n_val = round(0.2 n), at least one
test item when n >= 3. `carve_val` splits a val part off an official train list the same way (20% of
the class' train items).
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Hashable, Sequence

TRAIN_FRACTION, VAL_FRACTION = 0.5, 0.2


def _by_class(items: Sequence[tuple[Hashable, int]]) -> dict[int, list[Hashable]]:
    groups: dict[int, list[Hashable]] = defaultdict(list)
    for item, label in items:
        groups[label].append(item)
    return {label: sorted(group, key=str) for label, group in sorted(groups.items())}


def seeded_split(items: Sequence[tuple[Hashable, int]], seed: int = 0) -> dict[str, list[tuple[Hashable, int]]]:
    """{train, val, test} lists (class-major, deterministic for a seed) from one pool of (item, label)."""
    splits: dict[str, list[tuple[Hashable, int]]] = {"train": [], "val": [], "test": []}
    for label, group in _by_class(items).items():
        random.Random(f"{seed}:{label}").shuffle(group)
        n = len(group)
        n_train = round(TRAIN_FRACTION * n)
        n_val = round(VAL_FRACTION * n)
        if n >= 3 and n_train + n_val >= n:
            n_train = n - n_val - 1
        splits["train"] += [(item, label) for item in group[:n_train]]
        splits["val"] += [(item, label) for item in group[n_train:n_train + n_val]]
        splits["test"] += [(item, label) for item in group[n_train + n_val:]]
    return {name: rows for name, rows in splits.items() if rows}


def carve_val(train: Sequence[tuple[Hashable, int]], seed: int = 0) -> tuple[list, list]:
    """(train, val): 20% of each class' official train items (seeded shuffle) become val."""
    kept, val = [], []
    for label, group in _by_class(train).items():
        random.Random(f"{seed}:{label}").shuffle(group)
        n_val = round(VAL_FRACTION * len(group)) if len(group) > 1 else 0
        val += [(item, label) for item in group[:n_val]]
        kept += [(item, label) for item in group[n_val:]]
    return kept, val
