"""imagefolder: every class checked before anything is encoded; one class refused; nested folders read."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

import clipbridge.cli as cli
from clipbridge.extract.datasets.folders import read_imagefolder


def _images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(folder / f"{i}.png")


def _extract(root: Path, tmp_path: Path, capsys) -> tuple[int, str]:
    code = cli.main(["extract", "--dataset", "imagefolder", "--root", str(root), "--model", "clipbridge-tiny",
                     "--cache-root", str(tmp_path / "cache"), "--no-progress"])
    return code, capsys.readouterr().err


def test_an_empty_class_folder_fails_before_encoding_and_leaves_nothing(tmp_path, capsys):
    root = tmp_path / "pets"
    _images(root / "cat", 10)
    (root / "dog").mkdir()
    code, err = _extract(root, tmp_path, capsys)
    assert code == 1 and err.count("\n") == 1
    assert f"error: class folder {root / 'dog'} holds no images" in err
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.tmp"))


def test_an_empty_class_in_one_split_folder_is_refused(tmp_path):
    root = tmp_path / "pets"
    for split in ("train", "test"):
        _images(root / split / "cat", 3)
        _images(root / split / "dog", 3 if split == "train" else 0)
    import pytest

    from clipbridge.errors import ClipBridgeError

    with pytest.raises(ClipBridgeError, match=r"class folder .*test/dog holds no images"):
        read_imagefolder(root)


def test_a_one_class_dataset_is_refused(tmp_path, capsys):
    root = tmp_path / "only"
    _images(root / "cat", 10)
    code, err = _extract(root, tmp_path, capsys)
    assert code == 1 and "holds one class (cat): classification needs at least two class folders" in err


def test_nested_class_folders_are_read_as_their_class(tmp_path):
    root = tmp_path / "photos"
    _images(root / "cat" / "2024", 5)
    _images(root / "cat", 5)
    _images(root / "dog" / "a" / "b", 10)
    spec = read_imagefolder(root)
    items = [item for split in spec.splits.values() for item in split]
    assert len(items) == 20
    assert sorted(spec.original_classnames) == ["cat", "dog"]
    nested = [label for path, label in items if "/2024/" in str(path)]
    assert len(nested) == 5 and set(nested) == {spec.original_classnames.index("cat")}
