"""extract.datasets: registry, CoOp layout, splitfile, imagefolder, ImageNet subsets, clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from clipbridge.errors import ClipBridgeError
from clipbridge.extract.datasets import DatasetSpec, get_dataset, list_datasets, register_dataset
from clipbridge.extract.datasets.splitting import seeded_split

COOP_NAMES = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
              "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101"]


def _image(path: Path, color=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 20), color).save(path)


def test_registry_knows_coop_ood_and_generic_readers():
    names = list_datasets()
    for name in COOP_NAMES + ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r", "imagefolder",
                              "splitfile"]:
        assert name in names


def test_registering_a_reader_is_one_decorator(tmp_path):
    @register_dataset("test-one-liner")
    def read(root, *, split_file=None, download=False):
        return DatasetSpec("one", ["a_b"], ["a_b"], {"test": [("x", 0)]}, "made", load_image=lambda i: None)

    spec = get_dataset("test-one-liner", tmp_path)
    assert spec.name == "one" and spec.splits["test"] == [("x", 0)]


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ClipBridgeError, match="unknown dataset 'nope'.*dtd"):
        get_dataset("nope", "data")


def _coop_dtd(root: Path, classes=("banded", "bubbly_x"), per_split=(2, 1, 1)) -> Path:
    split = {}
    for name, n in zip(("train", "val", "test"), per_split):
        split[name] = []
        for label, cls in enumerate(classes):
            for i in range(n):
                rel = f"{cls}/{cls}_{name}_{i}.jpg"
                _image(root / "dtd" / "images" / rel)
                split[name].append([rel, label, cls])
    path = root / "dtd" / "split_zhou_DescribableTextures.json"
    path.write_text(json.dumps(split))
    return path


def test_coop_layout_reads_image_dir_and_split_file_and_cleans_names(tmp_path):
    _coop_dtd(tmp_path)
    spec = get_dataset("dtd", tmp_path)
    assert spec.classnames == ["banded", "bubbly x"] and spec.original_classnames == ["banded", "bubbly_x"]
    assert {k: len(v) for k, v in spec.splits.items()} == {"train": 4, "val": 2, "test": 2}
    assert spec.split_source == "coop:split_zhou_DescribableTextures.json"
    item, label = spec.splits["train"][0]
    assert Path(item).is_file() and label == 0
    assert spec.item_name(item) == "banded/banded_train_0.jpg"


def test_missing_dataset_folder_names_the_path(tmp_path):
    with pytest.raises(ClipBridgeError, match=f"not found: its images must be in {tmp_path / 'dtd'}"):
        get_dataset("dtd", tmp_path)
    with pytest.raises(ClipBridgeError, match="dataset root not found"):
        get_dataset("imagefolder", tmp_path / "absent")


def test_split_file_naming_absent_images_is_refused_with_the_path(tmp_path):
    split_path = _coop_dtd(tmp_path)
    split = json.loads(split_path.read_text())
    split["test"].append(["banded/not_there.jpg", 0, "banded"])
    split_path.write_text(json.dumps(split))
    with pytest.raises(ClipBridgeError, match="does not match the images.*not_there.jpg"):
        get_dataset("dtd", tmp_path)


def test_split_file_with_other_class_count_than_classnames_txt_is_refused(tmp_path):
    split_path = _coop_dtd(tmp_path)
    (split_path.parent / "classnames.txt").write_text("banded\nbubbly_x\nthird\n")
    with pytest.raises(ClipBridgeError, match="class count mismatch: .*2 classes.*lists 3"):
        get_dataset("splitfile", tmp_path / "dtd" / "images", split_file=split_path)


def test_imagefolder_without_split_folders_gets_a_deterministic_split(tmp_path):
    for cls in ("cat_big", "dog"):
        for i in range(10):
            _image(tmp_path / "pets" / cls / f"{i:02d}.png")
    first = get_dataset("imagefolder", tmp_path / "pets")
    second = get_dataset("imagefolder", tmp_path / "pets")
    assert first.splits == second.splits
    assert first.split_source == "seeded:0:50/20/30"
    assert {k: len(v) for k, v in first.splits.items()} == {"train": 10, "val": 4, "test": 6}
    assert first.classnames == ["cat big", "dog"]
    every = sorted(item for rows in first.splits.values() for item, _ in rows)
    assert len(every) == len(set(every)) == 20


def test_imagefolder_split_folders_must_hold_the_same_classes(tmp_path):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            _image(tmp_path / split / cls / "0.jpg")
    spec = get_dataset("imagefolder", tmp_path)
    assert set(spec.splits) == {"train", "test"} and spec.split_source == "folders:train,test"
    _image(tmp_path / "test" / "c" / "0.jpg")
    with pytest.raises(ClipBridgeError, match="class count mismatch"):
        get_dataset("imagefolder", tmp_path)


def test_seeded_split_is_independent_of_input_order():
    items = [(f"x{i}", i % 3) for i in range(30)]
    assert seeded_split(items) == seeded_split(list(reversed(items)))
    assert seeded_split(items, seed=1) != seeded_split(items, seed=0)


def test_imagenet_r_style_subset_records_imagenet_indices_and_wnids(tmp_path):
    base = tmp_path / "imagenet-rendition"
    base.mkdir()
    (base / "classnames.txt").write_text("n01440764 tench\nn01443537 goldfish\nn01484850 great white shark\n")
    for wnid in ("n01484850", "n01440764"):
        _image(base / "imagenet-r" / wnid / "a.jpg")
    spec = get_dataset("imagenet_r", tmp_path)
    assert list(spec.splits) == ["test"]
    assert spec.classnames == ["tench", "great white shark"]
    assert spec.attrs == {"wnids": ["n01440764", "n01484850"], "imagenet_class_index": [0, 2]}


def test_flowers17_split_file_reads_real_data(shared_dir):
    root = shared_dir / "data" / "flowers17"
    spec = get_dataset("splitfile", root / "jpg", split_file=root / "split_zhou_Flowers17.json")
    assert spec.name == "flowers17" and len(spec.classnames) == 17      # the folder holding jpg/
    assert {k: len(v) for k, v in spec.splits.items()} == {"train": 680, "val": 340, "test": 340}
    assert spec.classnames[2] == "lily valley"


def test_fgvc_aircraft_reads_coop_variant_lists(tmp_path):
    folder = tmp_path / "fgvc_aircraft"
    (folder / "images").mkdir(parents=True)
    (folder / "variants.txt").write_text("707-320\nA300B4\n")
    for split, rows in {"train": ["1 707-320", "2 A300B4"], "val": ["3 A300B4"], "test": ["4 707-320"]}.items():
        (folder / f"images_variant_{split}.txt").write_text("\n".join(rows) + "\n")
        for row in rows:
            _image(folder / "images" / f"{row.split()[0]}.jpg")
    spec = get_dataset("fgvc_aircraft", tmp_path)
    assert spec.classnames == ["707-320", "A300B4"] and spec.split_source == "coop:images_variant_*.txt"
    assert [label for _, label in spec.splits["train"]] == [0, 1]


def test_imagenet_uses_train_folders_for_train_and_val_folders_for_test(tmp_path):
    folder = tmp_path / "imagenet"
    folder.mkdir()
    (folder / "classnames.txt").write_text("n01440764 tench\nn01443537 goldfish\n")
    for split in ("train", "val"):
        for wnid in ("n01440764", "n01443537"):
            _image(folder / "images" / split / wnid / f"{split}.JPEG")
    spec = get_dataset("imagenet", tmp_path)
    assert set(spec.splits) == {"train", "test"} and spec.classnames == ["tench", "goldfish"]
    assert spec.item_name(spec.splits["test"][1][0]) == "val/n01443537/val.JPEG"
