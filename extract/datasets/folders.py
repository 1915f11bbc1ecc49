"""`imagefolder`: root/<class>/*.jpg, or root/{train,val,test}/<class>/*.jpg.

Without split folders the split is deterministic (extract/datasets/splitting.py, seed 0). With split
folders every split must hold the same classes (else: class count mismatch). A --split-file overrides
both (CoOp-format JSON, paths relative to root).
"""
from __future__ import annotations

from pathlib import Path

from clipbridge.errors import ClipBridgeError
from clipbridge.extract.datasets.coop import list_images
from clipbridge.extract.datasets.registry import (DatasetSpec, clean_classname, folder_dataset_name, register_dataset,
                                                  require_path)
from clipbridge.extract.datasets.splitfiles import spec_from_split_file
from clipbridge.extract.datasets.splitting import seeded_split

SPLIT_FOLDERS = ("train", "val", "test")


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


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
        splits = {split: [(str(p), label) for label, c in enumerate(classes) for p in list_images(root / split / c)]
                  for split in split_dirs}
        source = "folders:" + ",".join(split_dirs)
    else:
        classes = _class_dirs(root)
        pool = [(str(p), label) for label, c in enumerate(classes) for p in list_images(root / c)]
        splits = seeded_split(pool, seed=0)
        source = "seeded:0:50/20/30"
    if not classes:
        raise ClipBridgeError(f"no class folders found under {root} (expected root/<class>/*.jpg)")
    return DatasetSpec(name, [clean_classname(c) for c in classes], classes, splits, split_source=source, root=root)
