"""Dataset readers: `get_dataset(name, root, split_file=None, download=False) -> DatasetSpec`.

Importing the package registers every reader (CoOp datasets, ImageNet variants, imagefolder, splitfile,
and the procedural `shapes` set of extract/shapes.py).
"""
from clipbridge.extract.datasets import coop, folders, splitfiles  # noqa: F401  (register readers)
from clipbridge.extract.datasets.registry import DatasetSpec, get_dataset, list_datasets, register_dataset

try:  # the procedural toy dataset registers itself when its module is imported
    import clipbridge.extract.shapes  # noqa: F401
except ImportError:  # pragma: no cover - the toy module is optional
    pass

__all__ = ["DatasetSpec", "get_dataset", "list_datasets", "register_dataset"]
