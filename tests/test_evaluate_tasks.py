"""evaluate.tasks: CoOp support layout, masks, views, validation protocols, and that fitting never reads test."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from clipbridge.cache.errors import ClipBridgeError
from clipbridge.cache.fewshot import coop_fewshot_indices
from clipbridge.evaluate.tasks import build_fit_task, build_task, load_test


@dataclass
class Split:
    embedding: torch.Tensor
    labels: torch.Tensor
    paths: list
    views: int


@dataclass
class Text:
    prompts: list
    classes: torch.Tensor
    projected: torch.Tensor
    eos: torch.Tensor


class FakeCache:
    """A duck-typed cache: uneven classes, V stored views, optional val; counts every split read."""

    def __init__(self, train_counts=(6, 3, 5), views=2, val=True, dim=8, width=6, test_raises=False):
        g = torch.Generator().manual_seed(0)
        c = len(train_counts)
        self.path, self.cache_id = "fake.h5", "fakeid"
        self.attrs = {"dataset": "fake", "model": "m", "pretrained": "p"}
        self.classnames = [f"c{i}" for i in range(c)]
        self.original_classnames = list(self.classnames)
        self.text_projection = torch.randn(width, dim, generator=g)
        self.text_projection_bias = None
        self.logit_scale = 100.0
        self.text_sets = ["a", "b"]
        self.reads: list[str] = []
        self.test_raises = test_raises
        train_labels = torch.tensor([i % c for i in range(sum(train_counts) * 3)])
        keep, seen = [], [0] * c
        for i, y in enumerate(train_labels.tolist()):       # interleaved labels, uneven counts
            if seen[y] < train_counts[y]:
                keep.append(i)
                seen[y] += 1
        labels = train_labels[keep]
        self._splits = {"train": Split(torch.randn(len(labels), views, dim, generator=g) + 1, labels,
                                       [f"t{i}" for i in range(len(labels))], views),
                        "test": Split(torch.randn(12, 1, dim, generator=g) + 1, torch.arange(12) % c,
                                      [f"x{i}" for i in range(12)], 1)}
        if val:
            vl = torch.arange(4 * c) % c
            self._splits["val"] = Split(torch.randn(len(vl), views, dim, generator=g) + 1, vl,
                                        [f"v{i}" for i in range(len(vl))], views)
        self._text_g = g
        self._dim, self._width = dim, width

    @property
    def splits(self):
        return list(self._splits)

    def split(self, name):
        if name == "test" and self.test_raises:
            raise AssertionError("the test split was read while building the fitting task")
        self.reads.append(name)
        return self._splits[name]

    def text(self, names):
        c = len(self.classnames)
        per = 2 * len(names)
        eos = torch.randn(c * per, self._width, generator=torch.Generator().manual_seed(len(names)))
        return Text([""] * (c * per), torch.arange(c).repeat_interleave(per), eos @ self.text_projection, eos)


def test_support_is_class_major_shot_major_then_view_with_coop_rows():
    cache = FakeCache(train_counts=(6, 6, 6), views=2)
    task, meta = build_fit_task(cache, shots=3, seeds=[1, 2], views=2)
    train = cache._splits["train"]
    assert tuple(task.support.shape) == (2, 3, 6, 8)
    for s, seed in enumerate([1, 2]):
        rows = coop_fewshot_indices(train.labels.tolist(), cache._splits["val"].labels.tolist(), 3, seed)["train"]
        per_class = {c: [r for r in rows if int(train.labels[r]) == c] for c in range(3)}
        for c in range(3):
            for k, row in enumerate(per_class[c]):
                for v in range(2):
                    assert torch.equal(task.support[s, c, k * 2 + v], train.embedding[row, v])
    assert bool(task.support_mask.all()) and meta["short_classes"] == {}


def test_class_with_fewer_images_than_shots_is_masked_and_reported():
    cache = FakeCache(train_counts=(6, 2, 5), views=1)
    task, meta = build_fit_task(cache, shots=4, seeds=[1], views=1)
    assert task.support_mask.tolist() == [[True] * 4, [True, True, False, False], [True] * 4]
    assert meta["short_classes"] == {"c1": 2}
    assert torch.isfinite(task.support).all()


def test_views_selects_plain_view_only_and_rejects_more_than_stored():
    cache = FakeCache(views=2)
    task, _ = build_fit_task(cache, shots=2, seeds=[1], views=1)
    assert task.support.shape[2] == 2 and task.views == 1
    with pytest.raises(ClipBridgeError, match="stores 2 view"):
        build_fit_task(cache, shots=2, seeds=[1], views=3)


@pytest.mark.parametrize("shots", [0, 7])
def test_shots_outside_one_to_largest_class_is_a_clear_error(shots):
    with pytest.raises(ClipBridgeError, match="out of range"):
        build_fit_task(FakeCache(train_counts=(6, 3, 5)), shots=shots, seeds=[1])


def test_unknown_prompt_set_and_protocol_are_errors():
    with pytest.raises(ClipBridgeError, match="prompt set"):
        build_fit_task(FakeCache(), shots=1, seeds=[1], prompt_sets=["nope"])
    with pytest.raises(ClipBridgeError, match="protocol"):
        build_fit_task(FakeCache(), shots=1, seeds=[1], protocol="leaky")


def test_clean_validation_is_min_k_4_val_shots_per_class_of_the_same_seed():
    cache = FakeCache(train_counts=(6, 6, 6))
    task, meta = build_fit_task(cache, shots=2, seeds=[1, 3])
    val = cache._splits["val"]
    assert meta["val_source"] == "val" and not meta["val_is_test"]
    for s, seed in enumerate([1, 3]):
        rows = coop_fewshot_indices(cache._splits["train"].labels.tolist(), val.labels.tolist(), 2, seed)["val"]
        assert torch.equal(task.val[s], val.embedding[rows, 0])
        assert task.val_labels[s].tolist() == val.labels[rows].tolist()


def test_clean_without_val_split_draws_validation_from_train_images_outside_the_support():
    cache = FakeCache(train_counts=(8, 8, 8), val=False)
    task, meta = build_fit_task(cache, shots=2, seeds=[1, 2])
    again, _ = build_fit_task(cache, shots=2, seeds=[1, 2])
    assert meta["val_source"] == "train-heldout" and not meta["val_is_test"]
    assert torch.equal(task.val, again.val)                                   # deterministic
    train = cache._splits["train"].embedding[:, 0]
    for s in range(2):
        support = {tuple(v.tolist()) for v in task.support[s].reshape(-1, 8)}
        val_rows = {tuple(v.tolist()) for v in task.val[s]}
        assert len(val_rows) == 6 and not support & val_rows
        assert all(any(torch.equal(torch.tensor(v), t) for t in train) for v in val_rows)
    assert "test" not in cache.reads


@pytest.mark.parametrize("has_val", [True, False])
def test_clean_protocol_builds_the_task_without_reading_test(has_val):
    cache = FakeCache(val=has_val, test_raises=True)
    task, meta = build_fit_task(cache, shots=2, seeds=[1, 2, 3])
    assert task.num_seeds == 3 and "test" not in cache.reads


def test_paper_protocol_uses_full_val_shared_by_seeds():
    cache = FakeCache()
    task, meta = build_fit_task(cache, shots=2, seeds=[1, 2], protocol="paper")
    assert tuple(task.val.shape) == (1, 12, 8) and meta["val_source"] == "val-full"
    assert not meta["val_is_test"]


def test_paper_protocol_without_val_uses_test_and_flags_it():
    cache = FakeCache(val=False)
    task, meta = build_fit_task(cache, shots=2, seeds=[1, 2], protocol="paper")
    assert meta["val_is_test"] is True and meta["val_source"] == "test"
    assert torch.equal(task.val[0], cache._splits["test"].embedding[:, 0])


def test_build_task_returns_test_view0_queries_and_casts_dtype():
    cache = FakeCache()
    task, queries, labels, meta = build_task(cache, shots=1, seeds=[1], dtype="float64")
    assert task.support.dtype == torch.float64 and queries.dtype == torch.float64
    assert torch.equal(queries.float(), cache._splits["test"].embedding[:, 0]) and labels.dtype == torch.int64
    assert load_test(cache)[0].shape == (12, 8)
