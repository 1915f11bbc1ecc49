"""An independent, literal re-implementation of CoOp's few-shot draw (RECIPES.md §1; METHOD.md §6), for tests
to compare cache.fewshot against (never import cache.fewshot here).

CoOp seeds the GLOBAL `random` with the run's seed, then, for the train list and afterwards, on the same
stream, the val list: groups the items by label in order of first appearance and per class takes
`random.sample(items, K)` (all items, in list order, when the class has fewer), val with min(K, 4).
Without a val split, the project draws min(K, 4) per class, on the same stream right after the train draw,
from the train images the support set did not take (cache/fewshot.py's FewShotDraw).
"""
from __future__ import annotations

import random


def _by_label(items: list[int], labels) -> list[list[int]]:
    groups: dict[int, list[int]] = {}
    for item in items:
        groups.setdefault(int(labels[item]), []).append(item)
    return list(groups.values())


def _take(items: list[int], labels, shots: int) -> list[int]:
    out = []
    for group in _by_label(items, labels):
        out += random.sample(group, shots) if len(group) >= shots else group
    return out


def coop_draw(train_labels, val_labels, shots: int, seed: int) -> tuple[list[int], list[int]]:
    """(support rows of the train list, validation rows: of the val list, or of the train list when
    val_labels is None), drawn as above with the global `random` (its state is restored afterwards)."""
    saved = random.getstate()
    try:
        random.seed(seed)
        support = _take(list(range(len(train_labels))), train_labels, shots)
        if val_labels is not None:
            return support, _take(list(range(len(val_labels))), val_labels, min(shots, 4))
        taken = set(support)
        rest = [i for i in range(len(train_labels)) if i not in taken]
        return support, _take(rest, train_labels, min(shots, 4))
    finally:
        random.setstate(saved)
