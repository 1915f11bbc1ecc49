"""CoOp's few-shot sampling, reproduced exactly (METHOD.md section 6), and CoOp split files.

CoOp (through Dassl's generate_fewshot_dataset) seeds Python's `random` with the run's seed, then for the
train list and afterwards, continuing the SAME random stream, the val list: groups the items by label in
order of first appearance, and per class draws `random.sample(items, K)` (a class with fewer than K items
keeps all of them, in list order). The picked items are concatenated class after class, each class in
the order `random.sample` returned them. Validation uses min(K, 4) shots.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from clipbridge.errors import ClipBridgeError

#: CoOp draws at most this many validation shots per class.
MAX_VAL_SHOTS = 4


def _rows_by_label(labels: Sequence[int]) -> list[list[int]]:
    """Row indices grouped by label, groups in order of each label's first appearance."""
    groups: dict[int, list[int]] = {}
    for row, label in enumerate(labels):
        groups.setdefault(int(label), []).append(row)
    return list(groups.values())


def _sample_per_class(rng: random.Random, labels: Sequence[int], shots: int) -> list[int]:
    picked: list[int] = []
    for rows in _rows_by_label(labels):
        if len(rows) >= shots:
            picked += [rows[i] for i in rng.sample(range(len(rows)), shots)]
        else:
            picked += rows
    return picked


def check_shot_count(shots: int, labels: Sequence[int], classnames: Sequence[str], where: str) -> dict[str, int]:
    """Refuse K outside 1 .. the largest class of a train list (a class without images too); returns
    {classname: images} for the classes with fewer than K images (CoOp keeps all they have)."""
    counts = Counter(int(label) for label in labels)
    empty = [classnames[c] for c in range(len(classnames)) if counts.get(c, 0) == 0]
    if empty:
        raise ClipBridgeError(f"class {empty[0]!r} has no train images in {where}")
    largest = max(counts.values())
    if shots < 1 or shots > largest:
        raise ClipBridgeError(f"--shots {shots} is out of range: {where} has 1 to {largest} train images "
                              f"per class")
    return {classnames[c]: counts[c] for c in range(len(classnames)) if counts[c] < shots}


def coop_fewshot_indices(train_labels: Sequence[int], val_labels: Sequence[int], shots: int,
                         seed: int) -> dict[str, list[int]]:
    """Rows of the train and val lists CoOp picks for `shots` per class and `seed`.

    Returns {"train": [...], "val": [...]}: row indices into the given label lists, in CoOp's order
    (class by class in order of first appearance; within a class in the order drawn).
    """
    if int(shots) < 1:
        raise ClipBridgeError(f"shots must be at least 1, got {shots}")
    rng = random.Random(int(seed))
    train = _sample_per_class(rng, list(train_labels), int(shots))
    val = _sample_per_class(rng, list(val_labels), min(int(shots), MAX_VAL_SHOTS))
    return {"train": train, "val": val}


@dataclass(frozen=True)
class FewShotDraw:
    """One (shots, seed) draw of a dataset: `support` rows of the train list (CoOp's order) and the `val`
    rows of `val_split`'s list that the clean protocol validates on ("val"; or "train" when the dataset has
    no val split: then min(K, 4) per class are drawn, with the same sampler and seed, from the train images
    not in the support set)."""

    support: list[int]
    val_split: str
    val: list[int]


def draw_fewshot(train_labels: Sequence[int], val_labels: Sequence[int] | None, shots: int,
                 seed: int) -> FewShotDraw:
    """CoOp's draw for (shots, seed); val_labels None means the dataset has no val split (ImageNet)."""
    train_labels = list(train_labels)
    if val_labels is not None:
        picked = coop_fewshot_indices(train_labels, val_labels, shots, seed)
        return FewShotDraw(picked["train"], "val", picked["val"])
    first = coop_fewshot_indices(train_labels, train_labels, shots, seed)["train"]
    taken = set(first)
    remaining = [i for i in range(len(train_labels)) if i not in taken]
    picked = coop_fewshot_indices(train_labels, [train_labels[i] for i in remaining], shots, seed)
    return FewShotDraw(picked["train"], "train", [remaining[i] for i in picked["val"]])


def fewshot_grid(rows: Sequence[int], labels: Sequence[int], num_classes: int,
                 shots: int) -> tuple[np.ndarray, np.ndarray]:
    """Arrange picked rows class-major for a support tensor.

    rows    [n] picked row indices (e.g. coop_fewshot_indices(...)["train"]), labels [N] of the whole list.
    Returns index [C, K] int64 (the row of shot k of class c, -1 where the class has fewer than K picks)
    and mask [C, K] bool (True where a shot exists). Shots keep the order they were drawn in.
    """
    index = np.full((int(num_classes), int(shots)), -1, dtype=np.int64)
    filled = np.zeros(int(num_classes), dtype=np.int64)
    for row in rows:
        label = int(labels[int(row)])
        if not 0 <= label < num_classes:
            raise ClipBridgeError(f"row {row} has label {label}, outside [0, {num_classes})")
        if filled[label] >= shots:
            raise ClipBridgeError(f"class {label} has more than {shots} picked rows")
        index[label, filled[label]] = int(row)
        filled[label] += 1
    return index, index >= 0


def read_split_file(path: str | Path) -> dict[str, list[tuple[str, int, str]]]:
    """A CoOp split file: {"train"|"val"|"test": [[relative_path, label, classname], ...]}."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClipBridgeError(f"{path}: split file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ClipBridgeError(f"{path}: cannot read the split file ({error})") from None
    except json.JSONDecodeError as error:
        raise ClipBridgeError(f"{path}: not valid JSON (line {error.lineno}: {error.msg})") from None
    if not isinstance(data, dict) or not data:
        raise ClipBridgeError(f"{path}: a split file must be a JSON object of splits, e.g. {{\"train\": [...]}}")
    splits: dict[str, list[tuple[str, int, str]]] = {}
    for split, items in data.items():
        if not isinstance(items, list):
            raise ClipBridgeError(f"{path}: split {split!r} must be a list of [path, label, classname]")
        entries = []
        for row, item in enumerate(items):
            if (not isinstance(item, (list, tuple)) or len(item) != 3 or not isinstance(item[0], str)
                    or isinstance(item[1], bool) or not isinstance(item[1], int) or item[1] < 0
                    or not isinstance(item[2], str)):
                raise ClipBridgeError(
                    f"{path}: split {split!r} row {row} is {item!r}, expected [relative_path, label >= 0, "
                    "classname]")
            entries.append((item[0], item[1], item[2]))
        splits[split] = entries
    return splits
