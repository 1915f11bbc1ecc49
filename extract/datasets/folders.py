"""`imagefolder`: root/<class>/*.jpg, or root/{train,val,test}/<class>/*.jpg.

Without split folders the split is deterministic (extract/datasets/splitting.py, seed 0). With split
folders every split must hold the same classes (else: class count mismatch). A --split-file overrides
both (CoOp-format JSON, paths relative to root).

Images in sub-folders of a class folder belong to that class (root/cat/2024/x.jpg is a cat). Every class
must hold images (in every split folder) and there must be at least two classes: both are checked before
anything is encoded, so a bad folder fails at once and leaves no unfinished cache behind.
"""
from __future__ import annotations

from pathlib import Path

from clipbridge.errors import ClipBridgeError
from clipbridge.extract.datasets.coop import IMAGE_SUFFIXES
from clipbridge.extract.datasets.registry import (DatasetSpec, clean_classname, folder_dataset_name, register_dataset,
                                                  require_path)
from clipbridge.extract.datasets.splitfiles import spec_from_split_file
from clipbridge.extract.datasets.splitting import seeded_split

SPLIT_FOLDERS = ("train", "val", "test")


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_images(folder: Path) -> list[Path]:
    """Image files in a class folder and its sub-folders (hidden ones skipped), sorted by relative path."""
    found = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _checked_images(folders: dict[str, Path]) -> dict[str, list[Path]]:
    """{class: its images}; refuses, in one line, empty class folders and fewer than two classes."""
    images = {name: _class_images(folder) for name, folder in folders.items()}
    empty = [str(folders[name]) for name, found in images.items() if not found]
    if empty:
        raise ClipBridgeError(f"class folder {empty[0]} holds no images"
                              + (f" (nor {len(empty) - 1} more)" if len(empty) > 1 else "")
                              + f"; add images ({', '.join(sorted(IMAGE_SUFFIXES))}) or remove the folder")
    return images


@register_dataset("imagefolder")
def read_imagefolder(root: Path, *, split_file: Path | None = None, download: bool = False) -> DatasetSpec:
    """Images in class folders under root (optionally under train/val/test)."""
    require_path(root, "dataset root")
    name = folder_dataset_name(root, "imagefolder")
    if split_file is not None:
        return spec_from_split_file(name, split_file, root)
    split_dirs = [s for s in SPLIT_FOLDERS if (root / s).is_dir()]
    if split_dirs:
        classes = _class_dirs(root / split_dirs[0])
        for split in split_dirs[1:]:
            other = _class_dirs(root / split)
            if other != classes:
                raise ClipBridgeError(f"class count mismatch: {root / split} has {len(other)} class folders, "
                                      f"{root / split_dirs[0]} has {len(classes)} (they must hold the same classes)")
        splits = {}
        for split in split_dirs:
            found = _checked_images({c: root / split / c for c in classes})
            splits[split] = [(str(p), label) for label, c in enumerate(classes) for p in found[c]]
        source = "folders:" + ",".join(split_dirs)
    else:
        classes = _class_dirs(root)
        found = _checked_images({c: root / c for c in classes})
        pool = [(str(p), label) for label, c in enumerate(classes) for p in found[c]]
        splits = seeded_split(pool, seed=0)
        source = "seeded:0:50/20/30"
    if not classes:
        raise ClipBridgeError(f"no class folders found under {root} (expected root/<class>/*.jpg)")
    if len(classes) < 2:
        raise ClipBridgeError(f"{root} holds one class ({classes[0]}): classification needs at least two class "
                              "folders")
    return DatasetSpec(name, [clean_classname(c) for c in classes], classes, splits, split_source=source, root=root)
