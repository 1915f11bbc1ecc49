"""Datasets described by a CoOp-format split file: {"train"|"val"|"test": [[relpath, label, classname], ...]}.

`spec_from_split_file` is shared by the 11 CoOp readers and the generic `splitfile` dataset.
"""
from __future__ import annotations

import json
from pathlib import Path

from clipbridge.errors import ClipBridgeError
from clipbridge.extract.datasets.registry import (DatasetSpec, clean_classname, folder_dataset_name, register_dataset,
                                                  require_path)

SPLITS = ("train", "val", "test")


def read_coop_split_file(path: Path) -> dict[str, list[tuple[str, int, str]]]:
    """Parse a CoOp split JSON into {split: [(relpath, label, classname)]} (one-line errors naming path)."""
    require_path(path, "split file")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ClipBridgeError(f"cannot read split file {path}: {error}") from error
    if not isinstance(raw, dict) or not any(split in raw for split in SPLITS):
        raise ClipBridgeError(f"split file {path} has none of the splits {', '.join(SPLITS)}")
    parsed: dict[str, list[tuple[str, int, str]]] = {}
    for split in SPLITS:
        if split not in raw:
            continue
        try:
            parsed[split] = [(str(rel), int(label), str(name)) for rel, label, name in raw[split]]
        except (TypeError, ValueError) as error:
            raise ClipBridgeError(f"split file {path}: '{split}' entries must be [path, label, classname]") from error
    return parsed


def classnames_from_entries(entries: dict[str, list[tuple[str, int, str]]], source: Path) -> list[str]:
    """Class names indexed by label, checked for consistency (labels 0..C-1, one name per label)."""
    names: dict[int, str] = {}
    for split_entries in entries.values():
        for rel, label, name in split_entries:
            if names.setdefault(label, name) != name:
                raise ClipBridgeError(f"split file {source}: label {label} has two class names "
                                      f"'{names[label]}' and '{name}' (at {rel})")
    if sorted(names) != list(range(len(names))):
        missing = sorted(set(range(max(names) + 1)) - set(names))
        raise ClipBridgeError(f"split file {source}: labels are not 0..{max(names)} (missing {missing[:5]})")
    return [names[label] for label in range(len(names))]


def spec_from_split_file(name: str, split_path: Path, image_root: Path, *,
                         classnames_file: Path | None = None) -> DatasetSpec:
    """A DatasetSpec from a CoOp split file whose paths are relative to image_root.

    classnames_file (optional, one name per line or "wnid name"): must have as many classes as the split
    file, else the class counts do not match and the run stops.
    """
    require_path(image_root, f"image folder of dataset {name}")
    entries = read_coop_split_file(split_path)
    original = classnames_from_entries(entries, split_path)
    if classnames_file is not None and classnames_file.is_file():
        listed = read_classnames_txt(classnames_file)[1]
        if len(listed) != len(original):
            raise ClipBridgeError(f"class count mismatch: split file {split_path} has {len(original)} classes, "
                                  f"{classnames_file} lists {len(listed)}")
    splits = {split: [(str(image_root / rel), label) for rel, label, _ in rows] for split, rows in entries.items()}
    check_images_exist(splits, image_root, split_path)
    return DatasetSpec(name=name, classnames=[clean_classname(n) for n in original], original_classnames=original,
                       splits=splits, split_source=f"splitfile:{split_path.name}", root=image_root)


def check_images_exist(splits: dict[str, list[tuple[str, int]]], image_root: Path, split_path: Path) -> None:
    """Stop when the split file names images that are not under image_root (a mismatched split file)."""
    missing = [item for rows in splits.values() for item, _ in rows if not Path(item).is_file()]
    if missing:
        raise ClipBridgeError(f"split file {split_path} does not match the images: {len(missing)} listed images "
                              f"are missing under {image_root}, e.g. {missing[0]}")


def read_classnames_txt(path: Path) -> tuple[list[str], list[str]]:
    """Read classnames.txt: lines "wnid name with spaces" (ImageNet) or "name" -> (ids, names)."""
    require_path(path, "class names file")
    ids, names = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        head, _, rest = line.partition(" ")
        if rest and head[:1] == "n" and head[1:].isdigit():
            ids.append(head)
            names.append(rest.strip())
        else:
            ids.append(line)
            names.append(line)
    return ids, names


@register_dataset("splitfile")
def read_splitfile(root: Path, *, split_file: Path | None = None, download: bool = False) -> DatasetSpec:
    """Any CoOp-format split file (--split-file) with image paths relative to --root; named after the image
    folder (extract --name overrides it)."""
    if split_file is None:
        raise ClipBridgeError("dataset 'splitfile' needs --split-file FILE (CoOp-format JSON) and --root IMAGE_DIR")
    require_path(root, "image root")
    return spec_from_split_file(folder_dataset_name(root, "splitfile"), split_file, root,
                                classnames_file=split_file.parent / "classnames.txt")
