"""extract.datasets.download: torchvision copies become DatasetSpecs with documented deterministic splits.

torchvision's dataset classes are replaced by small fakes (no network here); the fakes expose the same
attributes the real classes do (_image_files/_labels/classes, _samples, samples, categories/index/y).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torchvision.datasets as tvd

from clipbridge.errors import ClipBridgeError
from clipbridge.extract.datasets import get_dataset


class FakeDTD:
    def __init__(self, root, download=False, split="train", partition=1):
        assert download and partition == 1
        folder = Path(root) / "dtd" / "dtd" / "images"
        self.classes = ["banded", "bubbly"]
        self._image_files, self._labels = [], []
        for label, cls in enumerate(self.classes):
            for i in range(2):
                path = folder / cls / f"{split}_{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"")
                self._image_files.append(path)
                self._labels.append(label)


class FakeFood101(FakeDTD):
    def __init__(self, root, download=False, split="train"):
        super().__init__(root, download, split if split == "test" else "train")
        self._image_files = self._image_files * 5  # 10 items per class in each split
        self._labels = self._labels * 5


class OfflineEuroSAT:
    def __init__(self, root, download=False):
        raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>\nmore")


def test_download_uses_official_train_val_test_when_torchvision_has_them(tmp_path, monkeypatch):
    monkeypatch.setattr(tvd, "DTD", FakeDTD)
    spec = get_dataset("dtd", tmp_path, download=True)
    assert spec.split_source == "torchvision:official"
    assert {k: len(v) for k, v in spec.splits.items()} == {"train": 4, "val": 4, "test": 4}
    assert spec.item_name(spec.splits["val"][0][0]) == "banded/val_0.jpg"


def test_download_carves_a_seeded_val_split_from_train_when_there_is_none(tmp_path, monkeypatch):
    monkeypatch.setattr(tvd, "Food101", FakeFood101)
    first = get_dataset("food101", tmp_path, download=True)
    second = get_dataset("food101", tmp_path, download=True)
    assert first.split_source == "torchvision:official+val20:0" and first.splits == second.splits
    assert {k: len(v) for k, v in first.splits.items()} == {"train": 16, "val": 4, "test": 20}


def test_download_failure_is_one_line_naming_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tvd, "EuroSAT", OfflineEuroSAT)
    with pytest.raises(ClipBridgeError, match=r"could not download eurosat .*name resolution>; place the CoOp") as info:
        get_dataset("eurosat", tmp_path, download=True)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "torchvision").exists()           # a failed download leaves no empty folder behind


def test_download_is_refused_for_datasets_torchvision_lacks(tmp_path):
    with pytest.raises(ClipBridgeError, match="--download is not available for ucf101"):
        get_dataset("ucf101", tmp_path, download=True)
