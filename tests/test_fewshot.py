"""CoOp's few-shot sampler is reproduced exactly; split files are read with clear errors."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from clipbridge.errors import ClipBridgeError
from clipbridge.cache.fewshot import coop_fewshot_indices, draw_fewshot, fewshot_grid, read_split_file
from coop_reference import coop_draw

DATASETS = ("EuroSAT", "DescribableTextures")


@pytest.mark.parametrize("dataset", DATASETS)
def test_sampler_reproduces_every_coop_fewshot_entry(shared_dir, dataset):
    folder = shared_dir / "data" / "coop"
    splits = read_split_file(folder / f"split_zhou_{dataset}.json")
    expected = json.loads((folder / f"fewshot_indices_{dataset}.json").read_text())
    train_labels = [label for _, label, _ in splits["train"]]
    val_labels = [label for _, label, _ in splits["val"]]
    assert len(expected) >= 15
    for key, indices in expected.items():
        shots, seed = (int(part.split("_")[1]) for part in key.split("-"))
        assert coop_fewshot_indices(train_labels, val_labels, shots, seed) == indices, key


def test_val_sampling_continues_the_random_stream_of_train():
    labels = [0] * 10 + [1] * 10
    result = coop_fewshot_indices(labels, labels, 2, seed=5)
    rng = random.Random(5)
    train = [rng.sample(range(10), 2), rng.sample(range(10), 2)]
    val = [rng.sample(range(10), 2), rng.sample(range(10), 2)]
    assert result["train"] == train[0] + [10 + i for i in train[1]]
    assert result["val"] == val[0] + [10 + i for i in val[1]]
    assert result["train"] != result["val"]


def test_classes_follow_first_appearance_and_small_classes_keep_all_items():
    labels = [2, 2, 0, 1, 0, 2, 1, 0, 2]      # class 2 first, then 0, then 1 (2 items only)
    result = coop_fewshot_indices(labels, [], 3, seed=1)
    train = result["train"]
    assert [labels[i] for i in train] == [2, 2, 2, 0, 0, 0, 1, 1]
    assert train[-2:] == [3, 6]               # class 1 has fewer than 3: all of it, in list order
    assert result["val"] == []


def test_validation_takes_at_most_four_shots_per_class():
    labels = list(np.repeat(np.arange(3), 10))
    result = coop_fewshot_indices(labels, labels, 16, seed=2)
    assert len(result["train"]) == 30 and len(result["val"]) == 12


def test_fewer_than_one_shot_is_refused():
    with pytest.raises(ClipBridgeError, match="shots must be at least 1, got 0"):
        coop_fewshot_indices([0, 1], [0, 1], 0, 1)


def test_grid_places_shots_class_major_and_masks_missing_ones():
    labels = [1, 1, 0, 1, 2]
    index, mask = fewshot_grid([4, 1, 0, 2], labels, num_classes=4, shots=2)
    assert index.tolist() == [[2, -1], [1, 0], [4, -1], [-1, -1]]
    assert mask.tolist() == [[True, False], [True, True], [True, False], [False, False]]


def test_split_file_is_read_as_path_label_classname(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": [["a/1.jpg", 0, "a"]], "test": [["b/2.jpg", 1, "b"]]}))
    assert read_split_file(path) == {"train": [("a/1.jpg", 0, "a")], "test": [("b/2.jpg", 1, "b")]}


@pytest.mark.parametrize("content, pattern", [
    (None, r"missing\.json: split file not found"),
    ("{not json", r"bad\.json: not valid JSON \(line 1"),
    ("[1, 2]", r"bad\.json: a split file must be a JSON object"),
    ('{"train": {"a": 1}}', r"bad\.json: split 'train' must be a list"),
    ('{"train": [["a.jpg", "0", "a"]]}', r"bad\.json: split 'train' row 0 is \['a.jpg', '0', 'a'\]"),
])
def test_malformed_split_files_are_refused_naming_the_file(tmp_path, content, pattern):
    path = tmp_path / ("missing.json" if content is None else "bad.json")
    if content is not None:
        path.write_text(content)
    with pytest.raises(ClipBridgeError, match=pattern):
        read_split_file(path)


# ---------------------------------------------------------------- every draw against tests/coop_reference.py


def _lists(seed: int, classes: int = 5, with_val: bool = True):
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, 12, classes)                             # some classes smaller than K
    train = rng.permutation(np.repeat(np.arange(classes), counts)).tolist()
    val = rng.permutation(np.repeat(np.arange(classes), rng.integers(1, 9, classes))).tolist() if with_val else None
    return train, val


@pytest.mark.parametrize("shots", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_draw_with_a_val_split_is_coops_stream_for_support_and_validation(shots, seed):
    train, val = _lists(10 * shots + seed)
    support, validation = coop_draw(train, val, shots, seed)
    draw = draw_fewshot(train, val, shots, seed)
    assert draw.val_split == "val"
    assert draw.support == support and draw.val == validation


@pytest.mark.parametrize("shots", [1, 2, 4, 8])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_draw_without_a_val_split_continues_coops_stream_on_the_images_the_support_left(shots, seed):
    train, _ = _lists(100 * shots + seed, with_val=False)
    support, validation = coop_draw(train, None, shots, seed)
    draw = draw_fewshot(train, None, shots, seed)
    assert draw.val_split == "train"
    assert draw.support == support and draw.val == validation
    assert not set(draw.val) & set(draw.support)


def test_draws_reproduce_coops_files_with_and_without_the_val_split(shared_dir):
    folder = shared_dir / "data" / "coop"
    splits = read_split_file(folder / "split_zhou_EuroSAT.json")
    expected = json.loads((folder / "fewshot_indices_EuroSAT.json").read_text())
    train = [label for _, label, _ in splits["train"]]
    val = [label for _, label, _ in splits["val"]]
    for key in ("shot_1-seed_1", "shot_4-seed_2", "shot_16-seed_3"):
        shots, seed = (int(part.split("_")[1]) for part in key.split("-"))
        draw = draw_fewshot(train, val, shots, seed)
        assert (draw.support, draw.val) == (expected[key]["train"], expected[key]["val"])
        assert (draw.support, draw.val) == coop_draw(train, val, shots, seed)
        heldout = draw_fewshot(train, None, shots, seed)
        assert heldout.support == expected[key]["train"]
        assert (heldout.support, heldout.val) == coop_draw(train, None, shots, seed)
