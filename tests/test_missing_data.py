"""`extract --dataset food101` without the data says where the files must be and how to get them; a failed
--download leaves no empty folder behind."""
from __future__ import annotations

import pytest
import torchvision.datasets

from clipbridge.errors import ClipBridgeError
from clipbridge.extract.datasets import get_dataset


def test_missing_food101_names_the_files_and_download(tmp_path):
    with pytest.raises(ClipBridgeError) as info:
        get_dataset("food101", tmp_path / "data")
    message = str(info.value)
    assert "\n" not in message
    assert f"images must be in {tmp_path / 'data' / 'food-101' / 'images'}/..." in message
    assert f"split file at {tmp_path / 'data' / 'food-101' / 'split_zhou_Food101.json'}" in message
    assert "pass --download to fetch it through torchvision" in message


def test_a_dataset_torchvision_cannot_fetch_says_so(tmp_path):
    with pytest.raises(ClipBridgeError, match=r"torchvision cannot download it"):
        get_dataset("ucf101", tmp_path)


def test_a_failed_download_leaves_no_folder(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "Food101", offline)
    root = tmp_path / "data"
    with pytest.raises(ClipBridgeError, match=r"could not download food101 .*network unreachable"):
        get_dataset("food101", root, download=True)
    assert not root.exists() and list(tmp_path.iterdir()) == []
