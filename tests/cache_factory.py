"""Small real caches for tests, written through CacheWriter as `extract` lays them out (no model, no images).

Every view is a known function of (split, image index in the split's whole list, family, copy), so a test
can check exactly which image and view landed where:

    path = write_cache(tmp_path / "c.h5", train_counts=(6, 3, 5), families={"flip": 1, "tip": 3},
                       pairs=[(2, 1), (2, 2)])          # pairs None: every image
    expected_view("train", 7, "tip", 2)                # [D] float32
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from clipbridge.cache.coverage import Coverage, plan_rows
from clipbridge.cache.schema import list_fingerprint
from clipbridge.cache.writer import CacheWriter

DIM, WIDTH = 8, 6


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def expected_view(split: str, index: int, family: str, copy: int, label: int | None = None) -> np.ndarray:
    """The stored raw embedding [D] of copy `copy` of family `family` of image `index` of `split`."""
    base = np.random.default_rng(_seed(split, index)).standard_normal(DIM) + 2.0
    if family == "plain":
        return base.astype(np.float32)
    return (base + 0.1 * np.random.default_rng(_seed(split, index, family, copy)).standard_normal(DIM)).astype(np.float32)


def interleaved_labels(counts: Sequence[int]) -> np.ndarray:
    """Labels of a list with counts[c] images of class c, classes interleaved (0, 1, 2, 0, 1, 2, ...)."""
    labels, seen = [], [0] * len(counts)
    for i in range(3 * sum(counts)):
        c = i % len(counts)
        if seen[c] < counts[c]:
            labels.append(c)
            seen[c] += 1
    return np.array(labels)


def write_cache(path: Path, *, train_counts: Sequence[int] = (6, 6, 6), val: bool = True, test: int = 12,
                families: dict[str, int] | None = None, pairs: Sequence[tuple[int, int]] | None = None,
                whole_val: bool = True, extract_args: dict | None = None) -> Path:
    """A finished cache: train list with train_counts images per class, val list of 4 per class (optional),
    test list of `test` images; augmented `families` {name: copies} on the support images; the images of
    `pairs` (shots, seed) only (None: every image)."""
    families = dict(families or {})
    classes = len(train_counts)
    lists = {"train": interleaved_labels(train_counts), "test": np.arange(test) % classes}
    if val:
        lists["val"] = np.arange(4 * classes) % classes
    coverage = Coverage.everything() if pairs is None else Coverage.sampled(pairs, whole_val)
    plans = plan_rows(lists, coverage)
    rng = np.random.default_rng(0)
    projection = rng.standard_normal((WIDTH, DIM)).astype(np.float32)
    with CacheWriter(path, attrs={"model": "m", "pretrained": "p", "dataset": "fake"}) as writer:
        writer.write_model(projection, 100.0)
        writer.write_classes([f"c{i}" for i in range(classes)])
        for name, per in (("coop", 1), ("ensemble", 3)):
            eos = rng.standard_normal((classes * per, WIDTH)).astype(np.float32)
            writer.write_text(name, [f"{name}{i}" for i in range(classes * per)],
                              np.arange(classes).repeat(per), eos @ projection, eos)
        for split, labels in lists.items():
            names = [f"{split}/{i}" for i in range(labels.size)]
            plan = plans[split]
            writer.write_list(split, labels, list_fingerprint(names, labels))
            writer.ensure_split(split, source=plan.rows, labels=labels[plan.rows], paths=[names[i] for i in plan.rows])
            writer.write_family(split, "plain", np.stack([[expected_view(split, i, "plain", 0)] for i in plan.rows]))
            support = np.searchsorted(plan.rows, plan.support)
            for family, copies in (families.items() if plan.support.size else ()):
                values = np.stack([[expected_view(split, i, family, c) for c in range(copies)] for i in plan.support])
                writer.ensure_family(split, family, rows=support, copies=copies, dim=DIM, dtype=np.float32)
                writer.write_views(split, family, np.arange(support.size), values)
        writer.set_attrs(coverage=coverage.to_attr(), extract_args=extract_args or {"dataset": "fake"})
        return writer.finish()
