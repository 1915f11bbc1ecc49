"""Dataset readers: `get_dataset(name, root, split_file=None, download=False) -> DatasetSpec`.

Importing the package registers every reader (CoOp datasets, ImageNet variants, imagefolder, splitfile,
and the procedural `shapes` set of extract/shapes.py).
"""
from __future__ import annotations

from pathlib import Path

from clipbridge.errors import ClipBridgeError
from clipbridge.extract.datasets import coop, folders, splitfiles  # noqa: F401  (register readers)
from clipbridge.extract.datasets.registry import READERS, DatasetSpec, as_dataset_spec, register_dataset

try:  # the procedural toy dataset registers itself when its module is imported
    import clipbridge.extract.shapes  # noqa: F401
except ImportError:  # pragma: no cover - the toy module is optional
    pass

__all__ = ["DatasetSpec", "get_dataset", "list_datasets", "register_dataset"]


def list_datasets() -> list[str]:
    """Names of all registered dataset readers, sorted."""
    return sorted(READERS)


def get_dataset(name: str, root: str | Path = "data", *, split_file: str | Path | None = None,
                download: bool = False) -> DatasetSpec:
    """Read dataset `name` under `root` into a DatasetSpec (errors name the missing path)."""
    names = list_datasets()
    if name not in READERS:
        raise ClipBridgeError(f"unknown dataset '{name}' (known: {', '.join(names)})")
    spec = READERS[name](Path(root).expanduser(), split_file=Path(split_file) if split_file else None,
                          download=download)
    return spec if isinstance(spec, DatasetSpec) else as_dataset_spec(spec)
