"""The dataset registry: a name -> reader function, and the DatasetSpec every reader returns.

Registering a reader is one line:

    @register_dataset("shapes")
    def read_shapes(root, *, split_file=None, download=False) -> DatasetSpec: ...

`get_dataset(name, root, split_file=..., download=...)` looks the reader up and calls it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable

from PIL import Image

from clipbridge.errors import ClipBridgeError

Item = Hashable  # a file path (str) for datasets on disk, or any id a spec's load_image understands
Reader = Callable[..., "DatasetSpec"]

READERS: dict[str, Reader] = {}


def load_rgb(item: Item) -> Image.Image:
    """Open an image file and convert it to RGB (decoding errors propagate to the caller)."""
    with Image.open(item) as image:
        return image.convert("RGB")


def clean_classname(name: str) -> str:
    """Prompt-ready class name: underscores -> spaces, runs of whitespace collapsed."""
    return " ".join(name.replace("_", " ").split())


@dataclass
class DatasetSpec:
    """What extraction needs to know about a dataset.

    classnames: prompt-ready names [C]; original_classnames: the dataset's own names [C];
    splits: {split: [(item, label), ...]} with labels in [0, C); split_source: how the splits were made
    (e.g. "coop:split_zhou_DescribableTextures.json", "folders", "seeded:0:50/20/30");
    load_image(item) -> RGB PIL image; root: paths are stored relative to it; attrs: extra root
    attributes for the cache (e.g. the ImageNet class indices of a 200-class subset).
    """

    name: str
    classnames: list[str]
    original_classnames: list[str]
    splits: dict[str, list[tuple[Item, int]]]
    split_source: str
    load_image: Callable[[Item], Image.Image] = load_rgb
    root: Path | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.classnames) != len(self.original_classnames):
            raise ClipBridgeError(f"dataset {self.name}: {len(self.classnames)} class names but "
                                  f"{len(self.original_classnames)} original names")
        num_classes = len(self.classnames)
        for split, items in self.splits.items():
            if not items:
                raise ClipBridgeError(f"dataset {self.name}: split '{split}' has no images")
            bad = [label for _, label in items if not 0 <= label < num_classes]
            if bad:
                raise ClipBridgeError(f"dataset {self.name}: split '{split}' has label {bad[0]} outside "
                                      f"0..{num_classes - 1} ({num_classes} classes)")

    def item_name(self, item: Item) -> str:
        """The path stored in the cache: relative to root when the item is a file under it."""
        text = str(item)
        if self.root is not None:
            try:
                return str(Path(text).relative_to(self.root))
            except ValueError:
                pass
        return text


def register_dataset(name: str) -> Callable[[Reader], Reader]:
    """Decorator: register `reader(root, *, split_file=None, download=False) -> DatasetSpec` under name."""

    def add(reader: Reader) -> Reader:
        if name in READERS and READERS[name] is not reader:
            raise ValueError(f"dataset reader '{name}' registered twice")
        READERS[name] = reader
        return reader

    return add


def as_dataset_spec(spec: Any) -> DatasetSpec:
    """A DatasetSpec from any object with the same fields (name, classnames, original_classnames, splits,
    split_source, optional load_image/root/attrs), e.g. a reader's own frozen dataclass."""
    fields = ("name", "classnames", "original_classnames", "splits", "split_source")
    extra = {key: getattr(spec, key) for key in ("load_image", "root", "attrs") if getattr(spec, key, None)}
    return DatasetSpec(**{key: getattr(spec, key) for key in fields}, **extra)


#: Image-folder names too generic to name a dataset (CoOp layouts keep images in such a subfolder).
GENERIC_FOLDERS = ("images", "image", "imgs", "img", "jpg", "jpeg", "data")


def folder_dataset_name(root: Path, fallback: str) -> str:
    """The name of a dataset read from an image folder: the folder's name, or its parent's when the folder
    has a generic name ('/data/flowers/jpg' -> 'flowers')."""
    path = root.resolve()
    if path.name.lower() in GENERIC_FOLDERS and path.parent.name:
        path = path.parent
    return path.name or fallback


def require_path(path: Path, what: str) -> Path:
    """Return path, or raise the one-line error naming it."""
    if not path.exists():
        raise ClipBridgeError(f"{what} not found: {path}")
    return path
