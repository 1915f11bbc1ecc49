"""Which images a cache holds: every image of its splits, or only those CoOp's sampler picks.

A cache extracted with `--shots 1,2,4,8,16 --seeds 1-3` holds, for the train split, only the union of the
support images CoOp's sampler draws for those (shots, seed) pairs, and for validation what the protocols
need: the min(K, 4) per class each draw validates on (`clean`; held-out train images when the dataset has
no val split) and, unless only `clean` was asked for, the whole val split (`paper`). The test split is
always whole. Support images get every view family asked for; every other stored image gets the plain
view only (validation and test queries are plain).

    coverage = Coverage.sampled([(16, 1), (16, 2)], whole_val=True)
    plans = plan_rows({"train": train_labels, "val": val_labels, "test": test_labels}, coverage)
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from clipbridge.errors import ClipBridgeError
from clipbridge.cache.fewshot import draw_fewshot

TRAIN, VAL, TEST = "train", "val", "test"


@dataclass(frozen=True)
class Coverage:
    """pairs: the (shots, seed) pairs whose support images are held, sorted; None = every train image.
    whole_val: the whole val split is held (what `--protocol paper` validates on)."""

    pairs: tuple[tuple[int, int], ...] | None
    whole_val: bool = True

    @classmethod
    def everything(cls) -> "Coverage":
        return cls(None, True)

    @classmethod
    def sampled(cls, pairs: Iterable[tuple[int, int]], whole_val: bool) -> "Coverage":
        pairs = tuple(sorted({(int(k), int(s)) for k, s in pairs}))
        if not pairs:
            raise ClipBridgeError("a sampled coverage needs at least one (shots, seed) pair")
        if any(k < 1 for k, _ in pairs):
            raise ClipBridgeError("shots must be at least 1")
        return cls(pairs, bool(whole_val))

    @property
    def is_everything(self) -> bool:
        return self.pairs is None

    def covers(self, shots: int, seed: int) -> bool:
        return self.pairs is None or (int(shots), int(seed)) in self.pairs

    def missing(self, shots: Iterable[int], seeds: Iterable[int]) -> list[tuple[int, int]]:
        """The (shots, seed) pairs of the grid this coverage lacks."""
        return [(k, s) for k in shots for s in seeds if not self.covers(k, s)]

    def union(self, other: "Coverage") -> "Coverage":
        if self.pairs is None or other.pairs is None:
            return Coverage(None, True)
        return Coverage.sampled(self.pairs + other.pairs, self.whole_val or other.whole_val)

    def contains(self, other: "Coverage") -> bool:
        """Whether everything `other` holds is held here too."""
        if self.pairs is None:
            return True
        if other.pairs is None:
            return False
        return set(other.pairs) <= set(self.pairs) and (self.whole_val or not other.whole_val)

    def to_attr(self) -> dict[str, Any]:
        return {"train": "all" if self.pairs is None else "sampled",
                "pairs": None if self.pairs is None else [list(p) for p in self.pairs],
                "val": "all" if self.whole_val else "sampled"}

    @classmethod
    def from_attr(cls, value: Any) -> "Coverage":
        if not value:
            return cls.everything()
        if value.get("train") == "all":
            return cls(None, True)
        return cls.sampled([tuple(p) for p in value["pairs"]], value.get("val") == "all")

    def describe(self) -> str:
        """'every image' or 'shots 1,2 x seeds 1-3 (6 pairs), whole val split'."""
        if self.pairs is None:
            return "every image of every split"
        shots = sorted({k for k, _ in self.pairs})
        seeds = sorted({s for _, s in self.pairs})
        grid = len(shots) * len(seeds) == len(self.pairs)
        what = (f"shots {format_ranges(shots)} x seeds {format_ranges(seeds)}" if grid
                else ", ".join(f"{k}-shot seed {s}" for k, s in self.pairs))
        return f"sampled train images of {what} ({len(self.pairs)} pairs), " + (
            "whole val split" if self.whole_val else "sampled val images only")


@dataclass(frozen=True)
class RowPlan:
    """Rows of one split a cache stores. rows [N] sorted indices into the split's whole list; support [M]
    the subset that gets the augmented view families (the few-shot support images)."""

    rows: np.ndarray
    support: np.ndarray


def plan_rows(split_labels: dict[str, Sequence[int]], coverage: Coverage) -> dict[str, RowPlan]:
    """The rows to store per split for `coverage` (split_labels: the labels of each split's whole list)."""
    sizes = {split: len(labels) for split, labels in split_labels.items()}
    if coverage.is_everything:
        plans = {split: RowPlan(np.arange(n), np.arange(n) if split == TRAIN else np.empty(0, np.int64))
                 for split, n in sizes.items()}
        return plans
    if TRAIN not in split_labels:
        raise ClipBridgeError("--shots/--seeds sample the train split, but this dataset has none")
    has_val = VAL in split_labels
    support: set[int] = set()
    held: dict[str, set[int]] = {TRAIN: set(), VAL: set()}
    for shots, seed in coverage.pairs:
        draw = draw_fewshot(split_labels[TRAIN], split_labels[VAL] if has_val else None, shots, seed)
        support.update(draw.support)
        held[draw.val_split].update(draw.val)
    plans = {}
    for split, n in sizes.items():
        if split == TRAIN:
            rows = support | held[TRAIN]
        elif split == VAL and not coverage.whole_val:
            rows = held[VAL]
        else:
            rows = set(range(n))
        picked = np.array(sorted(rows), dtype=np.int64)
        plans[split] = RowPlan(picked, np.array(sorted(support), dtype=np.int64) if split == TRAIN
                               else np.empty(0, np.int64))
    return plans


def invocation() -> str:
    """How the user started this process: 'python cli.py' or 'clipbridge' (for hints)."""
    program = sys.argv[0] if sys.argv else ""
    if program.endswith("cli.py"):
        return f"python {shlex.quote(program)}"
    return "clipbridge"


def extract_hint(extract_args: dict[str, Any] | None, *, shots: Iterable[int] | None = None,
                 seeds: Iterable[int] | None = None, families: Iterable[str] | None = None,
                 protocols: str | None = None, path: str | Path | None = None) -> str:
    """The extract command that adds (shots, seeds) / view families to the cache it was recorded for
    (`path`: that cache file, named with --out so the command extends it wherever it lies)."""
    args = dict(extract_args or {})
    words = [invocation(), "extract"]
    for option in ("dataset", "root", "split_file", "name", "model", "pretrained", "precision"):
        if args.get(option):
            words += [f"--{option.replace('_', '-')}", shlex.quote(str(args[option]))]
    if path is not None:
        words += ["--out", shlex.quote(str(path))]
    if shots is not None:
        words += ["--shots", format_ranges(sorted(set(shots)))]
    if seeds is not None:
        words += ["--seeds", format_ranges(sorted(set(seeds)))]
    if families:
        words += ["--view-families", ",".join(families)]
    if protocols:
        words += ["--protocols", protocols]
    return " ".join(words)


def format_ranges(values: Iterable[int]) -> str:
    """[1, 2, 3, 5] -> '1-3,5' (sorted runs of consecutive integers, duplicates dropped)."""
    values = sorted({int(v) for v in values})
    parts, start = [], None
    for i, value in enumerate(values):
        start = value if start is None else start
        if i + 1 == len(values) or values[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ",".join(parts)
