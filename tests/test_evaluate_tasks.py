"""evaluate.fitting.tasks: CoOp support layout, masks, view families, validation protocols, coverage, and that
fitting never reads test."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from cache_factory import expected_view, interleaved_labels, write_cache
from coop_reference import coop_draw
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.reader import open_cache
from clipbridge.evaluate.fitting.tasks import build_fit_task, load_test


class Watched:
    """A cache whose reads are recorded per split (and refused for `forbidden`)."""

    def __init__(self, cache, forbidden: str | None = None):
        self._cache, self.reads, self.forbidden = cache, [], forbidden

    def __getattr__(self, name):
        value = getattr(self._cache, name)
        if name in ("rows", "views", "plain", "list_labels"):
            def read(split, *args, **kwargs):
                if split == self.forbidden:
                    raise AssertionError(f"the {split} split was read while building the fitting task")
                self.reads.append(split)
                return value(split, *args, **kwargs)
            return read
        return value


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    return {
        "even": write_cache(root / "even.h5", train_counts=(6, 6, 6), families={"flip": 1, "tip": 3}),
        "uneven": write_cache(root / "uneven.h5", train_counts=(6, 2, 5)),
        "noval": write_cache(root / "noval.h5", train_counts=(8, 8, 8), val=False),
        "sampled": write_cache(root / "sampled.h5", train_counts=(9, 9, 9), families={"tip": 2},
                               pairs=[(2, 1), (2, 2), (4, 1)], whole_val=False,
                               extract_args={"dataset": "fake", "root": "/data", "model": "m", "pretrained": "p"}),
    }


def test_support_is_class_major_shot_major_then_families_in_order(caches):
    cache = open_cache(caches["even"])
    task, meta = build_fit_task(cache, shots=3, seeds=[1, 2], families=("plain", "tip"))
    assert tuple(task.support.shape) == (2, 3, 3 * 4, 8) and task.views == 4
    train = interleaved_labels((6, 6, 6))
    for s, seed in enumerate([1, 2]):
        rows = coop_draw(train.tolist(), (np.arange(12) % 3).tolist(), 3, seed)[0]
        per_class = {c: [r for r in rows if train[r] == c] for c in range(3)}
        for c in range(3):
            for k, row in enumerate(per_class[c]):
                views = [("plain", 0)] + [("tip", copy) for copy in range(3)]
                for v, (family, copy) in enumerate(views):
                    expected = torch.from_numpy(expected_view("train", row, family, copy))
                    assert torch.equal(task.support[s, c, k * 4 + v], expected), (s, c, k, v)
    assert bool(task.support_mask.all()) and meta["short_classes"] == {}
    assert meta["view_families"] == ["plain", "tip"] and meta["views"] == 4


def test_class_with_fewer_images_than_shots_is_masked_and_reported(caches):
    task, meta = build_fit_task(open_cache(caches["uneven"]), shots=4, seeds=[1])
    assert task.support_mask.tolist() == [[True] * 4, [True, True, False, False], [True] * 4]
    assert meta["short_classes"] == {"c1": 2}
    assert torch.isfinite(task.support).all()


def test_a_family_the_cache_lacks_is_refused_with_the_command_that_adds_it(caches):
    path = caches["even"]
    with pytest.raises(ClipBridgeError, match=r"no view family 'semo-r0.8' \(it has plain, flip, tip\); add it "
                                              r"with: clipbridge extract --dataset fake --out " + re.escape(str(path))
                                              + r" --view-families flip,semo-r0.8,tip"):
        build_fit_task(open_cache(path), shots=2, seeds=[1], families=("plain", "semo-r0.8"))


@pytest.mark.parametrize("shots", [0, 7])
def test_shots_outside_one_to_largest_class_is_a_clear_error(caches, shots):
    with pytest.raises(ClipBridgeError, match="out of range"):
        build_fit_task(open_cache(caches["uneven"]), shots=shots, seeds=[1])


def test_unknown_prompt_set_and_protocol_are_errors(caches):
    cache = open_cache(caches["even"])
    with pytest.raises(ClipBridgeError, match="prompt set"):
        build_fit_task(cache, shots=1, seeds=[1], prompt_sets=["nope"])
    with pytest.raises(ClipBridgeError, match="protocol"):
        build_fit_task(cache, shots=1, seeds=[1], protocol="leaky")


def test_clean_validation_is_min_k_4_val_shots_per_class_of_the_same_seed(caches):
    task, meta = build_fit_task(open_cache(caches["even"]), shots=2, seeds=[1, 3])
    val_labels = (np.arange(12) % 3).tolist()
    assert meta["val_source"] == "val" and not meta["val_is_test"]
    for s, seed in enumerate([1, 3]):
        rows = coop_draw(interleaved_labels((6, 6, 6)).tolist(), val_labels, 2, seed)[1]
        expected = torch.from_numpy(np.stack([expected_view("val", r, "plain", 0) for r in rows]))
        assert torch.equal(task.val[s], expected)
        assert task.val_labels[s].tolist() == [val_labels[r] for r in rows]


def test_clean_without_val_split_draws_validation_from_train_images_outside_the_support(caches):
    cache = Watched(open_cache(caches["noval"]), forbidden="test")
    task, meta = build_fit_task(cache, shots=2, seeds=[1, 2])
    again, _ = build_fit_task(cache, shots=2, seeds=[1, 2])
    assert meta["val_source"] == "train-heldout" and not meta["val_is_test"]
    assert torch.equal(task.val, again.val)                                   # deterministic
    train = interleaved_labels((8, 8, 8)).tolist()
    for s, seed in enumerate([1, 2]):
        support, heldout = coop_draw(train, None, 2, seed)          # independent of cache.fewshot
        assert not set(heldout) & set(support) and len(heldout) == 6
        expected = torch.from_numpy(np.stack([expected_view("train", r, "plain", 0) for r in heldout]))
        assert torch.equal(task.val[s], expected)
        assert task.val_labels[s].tolist() == [train[r] for r in heldout]


@pytest.mark.parametrize("name", ["even", "noval", "sampled"])
def test_clean_protocol_builds_the_task_without_reading_test(caches, name):
    cache = Watched(open_cache(caches[name]), forbidden="test")
    task, _ = build_fit_task(cache, shots=2, seeds=[1, 2])
    assert task.num_seeds == 2 and "test" not in cache.reads


def test_paper_protocol_uses_full_val_shared_by_seeds(caches):
    task, meta = build_fit_task(open_cache(caches["even"]), shots=2, seeds=[1, 2], protocol="paper")
    assert tuple(task.val.shape) == (1, 12, 8) and meta["val_source"] == "val-full"
    assert not meta["val_is_test"]


def test_paper_protocol_without_val_uses_test_and_flags_it(caches):
    task, meta = build_fit_task(open_cache(caches["noval"]), shots=2, seeds=[1, 2], protocol="paper")
    assert meta["val_is_test"] is True and meta["val_source"] == "test"
    expected = torch.from_numpy(np.stack([expected_view("test", i, "plain", 0) for i in range(12)]))
    assert torch.equal(task.val[0], expected)


def test_fit_task_and_test_queries_are_plain_and_cast_to_the_dtype(caches):
    cache = open_cache(caches["even"])
    task, _ = build_fit_task(cache, shots=1, seeds=[1], dtype="float64")
    queries, labels = load_test(cache, dtype="float64")
    assert task.support.dtype == torch.float64 and queries.dtype == torch.float64
    expected = np.stack([expected_view("test", i, "plain", 0) for i in range(12)])
    assert torch.equal(queries.float(), torch.from_numpy(expected)) and labels.dtype == torch.int64
    assert load_test(cache)[0].shape == (12, 8)


def test_a_sampled_cache_serves_the_pairs_it_covers_with_coops_images(caches):
    cache = open_cache(caches["sampled"])
    train = interleaved_labels((9, 9, 9)).tolist()
    assert cache.rows("train").source.size < len(train)              # only the sampled images are stored
    task, _ = build_fit_task(cache, shots=4, seeds=[1], families=("plain", "tip"))
    rows = coop_draw(train, (np.arange(12) % 3).tolist(), 4, 1)[0]
    for c in range(3):
        for k, row in enumerate(r for r in rows if train[r] == c):
            for v, (family, copy) in enumerate((("plain", 0), ("tip", 0), ("tip", 1))):
                assert torch.equal(task.support[0, c, k * 3 + v],
                                   torch.from_numpy(expected_view("train", row, family, copy)))


def test_an_uncovered_pair_is_refused_in_one_line_naming_the_command_that_adds_it(caches):
    cache = open_cache(caches["sampled"])
    with pytest.raises(ClipBridgeError) as info:
        build_fit_task(cache, shots=4, seeds=[1, 2, 3])
    message = str(info.value)
    assert "\n" not in message
    assert ("holds the images of sampled train images of 2-shot seed 1, 2-shot seed 2, 4-shot seed 1 (3 pairs), "
            "sampled val images only, not 4-shot seed 2, 4-shot seed 3; add them with: clipbridge extract "
            f"--dataset fake --root /data --model m --pretrained p --out {caches['sampled']} --shots 4 --seeds 2-3 "
            "--view-families tip") in message


def test_protocol_paper_on_a_cache_without_the_whole_val_split_is_refused(caches):
    with pytest.raises(ClipBridgeError, match=r"protocol paper validates on the whole val split.*--protocols "
                                              r"clean,paper"):
        build_fit_task(open_cache(caches["sampled"]), shots=2, seeds=[1], protocol="paper")
