"""--download: fetch a dataset through torchvision.datasets into <root>/torchvision/ and split it.

Splits when no --split-file is given (recorded as the cache attribute split_source):
    official train/val/test            Flowers102, DTD (partition 1), FGVCAircraft   "torchvision:official"
    official train(val)/test; val =    Food101, OxfordIIITPet, StanfordCars          "torchvision:official+val20:0"
      20% of each class' train items
      (splitting.carve_val, seed 0)
    no official split; 50/20/30        EuroSAT, Caltech101, SUN397                   "seeded:0:50/20/30"
      per class (splitting.seeded_split)
With --split-file (CoOp's split_zhou_*.json) the images are looked up under the torchvision copy's image
folder, so CoOp's exact splits apply to the downloaded files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipbridge.errors import ClipBridgeError
from clipbridge.extract.datasets.registry import DatasetSpec, clean_classname
from clipbridge.extract.datasets.splitfiles import spec_from_split_file
from clipbridge.extract.datasets.splitting import carve_val, seeded_split


@dataclass(frozen=True)
class TorchvisionSource:
    """A torchvision dataset class, the constructor kwargs per split, and its image folder under the root."""

    cls: str
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)  # {} -> one pool, seeded split
    image_dir: str = ""


SOURCES = {
    "oxford_flowers": TorchvisionSource("Flowers102", {s: {"split": s} for s in ("train", "val", "test")},
                                        "flowers-102/jpg"),
    "dtd": TorchvisionSource("DTD", {s: {"split": s, "partition": 1} for s in ("train", "val", "test")},
                             "dtd/dtd/images"),
    "fgvc_aircraft": TorchvisionSource("FGVCAircraft", {s: {"split": s} for s in ("train", "val", "test")},
                                       "fgvc-aircraft-2013b/data/images"),
    "food101": TorchvisionSource("Food101", {"train": {"split": "train"}, "test": {"split": "test"}},
                                 "food-101/images"),
    "oxford_pets": TorchvisionSource("OxfordIIITPet", {"train": {"split": "trainval"}, "test": {"split": "test"}},
                                     "oxford-iiit-pet/images"),
    "stanford_cars": TorchvisionSource("StanfordCars", {"train": {"split": "train"}, "test": {"split": "test"}},
                                       "stanford_cars"),
    "eurosat": TorchvisionSource("EuroSAT", {}, "eurosat/2750"),
    "caltech101": TorchvisionSource("Caltech101", {}, "caltech101/101_ObjectCategories"),
    "sun397": TorchvisionSource("SUN397", {}, "SUN397"),
}


def _samples(dataset: Any) -> list[tuple[str, int]]:
    """(image path, label) of every item of a torchvision dataset (reads each class' private file list)."""
    if hasattr(dataset, "_samples"):  # StanfordCars
        return [(str(p), int(y)) for p, y in dataset._samples]
    if hasattr(dataset, "samples"):  # ImageFolder-based (EuroSAT)
        return [(str(p), int(y)) for p, y in dataset.samples]
    files = getattr(dataset, "_image_files", None) or getattr(dataset, "_images", None)
    if files is not None:  # Flowers102, DTD, Food101, FGVCAircraft, SUN397, OxfordIIITPet
        return [(str(p), int(y)) for p, y in zip(files, dataset._labels)]
    if hasattr(dataset, "categories") and hasattr(dataset, "index"):  # Caltech101
        folder = Path(dataset.root) / "101_ObjectCategories"
        return [(str(folder / dataset.categories[y] / f"image_{i:04d}.jpg"), int(y))
                for i, y in zip(dataset.index, dataset.y)]
    raise ClipBridgeError(f"cannot list the images of torchvision's {type(dataset).__name__}")


def _classes(dataset: Any) -> list[str]:
    names = getattr(dataset, "classes", None) or getattr(dataset, "categories", None)
    if not names:
        raise ClipBridgeError(f"torchvision's {type(dataset).__name__} gives no class names")
    return [str(n) for n in names]


def torchvision_spec(name: str, root: Path, *, split_file: Path | None = None) -> DatasetSpec:
    """Download (if needed) and read dataset `name` through torchvision under root/torchvision."""
    if name not in SOURCES:
        raise ClipBridgeError(f"--download is not available for {name} (torchvision has it for "
                              f"{', '.join(sorted(SOURCES))}); place the CoOp copy under {root}")
    import torchvision.datasets as tvd

    source = SOURCES[name]
    base = root / "torchvision"
    created = [p for p in (base, *base.parents) if not p.exists()]      # removed again if the download fails
    try:
        os.makedirs(base, exist_ok=True)
        parts = {split: getattr(tvd, source.cls)(str(base), download=True, **kwargs)
                 for split, kwargs in (source.splits or {"all": {}}).items()}
    except Exception as error:  # network, checksum and archive errors come in many types
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        _remove_created(created)
        raise ClipBridgeError(f"could not download {name} through torchvision into {base}: {reason}; "
                              f"place the CoOp copy under {root} instead") from None
    if split_file is not None:
        spec = spec_from_split_file(name, split_file, base / source.image_dir)
        spec.split_source = f"coop:{split_file.name} (torchvision images)"
        return spec
    original = _classes(next(iter(parts.values())))
    if not source.splits:
        splits, split_source = seeded_split(_samples(parts["all"]), seed=0), "seeded:0:50/20/30"
    elif "val" in parts:
        splits, split_source = {split: _samples(ds) for split, ds in parts.items()}, "torchvision:official"
    else:
        train, val = carve_val(_samples(parts["train"]), seed=0)
        splits = {"train": train, "val": val, "test": _samples(parts["test"])}
        split_source = "torchvision:official+val20:0"
    return DatasetSpec(name, [clean_classname(n) for n in original], original, splits, split_source=split_source,
                       root=base / source.image_dir)


def _remove_created(created: list[Path]) -> None:
    """Remove the folders a failed download created (innermost first), with whatever partial files they hold."""
    import shutil

    for folder in created:                       # (base, its new parents...): innermost first
        shutil.rmtree(folder, ignore_errors=True)
