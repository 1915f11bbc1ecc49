"""The cache file format: names, attributes and paths shared by the writer and the reader.

One HDF5 file per model x pretrained x dataset (DESIGN.md, "The cache"). Format version 2:

    root attrs   format="clipbridge-cache", version, model, pretrained (tag or file name),
                 pretrained_sha256 (checkpoint files only), open_clip_version, torch_version, dataset,
                 image_size, precision, split_source, created, uuid, complete,
                 coverage (JSON, cache.coverage.Coverage), extract_args (JSON: the options that made it),
                 checksums="crc32" (every dataset then has attrs checksum="crc32:<hex>", cache.integrity;
                 absent in caches written before checksums, which are read unchecked)
    /model/text_projection     [W, D]     float32, Wt; only when the cache holds EOS features (has_eos)
    /model/text_projection_bias [D]       float32, b of an affine projection t = e Wt + b (SigLIP); absent = 0
    /model/logit_scale         ()         float32, exp() already applied (tau, 100 for OpenAI CLIP)
    /model/logit_bias          ()         float32, sigmoid-loss models' logit bias (SigLIP); absent = none
    /model attrs               has_eos (bool), has_projection_bias (bool), text_pooling (how the pooled
                               feature is taken: argmax, last, first, eos, cls-appended, ...),
                               projection_kind (matrix, linear, affine, identity, or what else it is),
                               eos_note (why no EOS features are stored; "" when they are).
                               Caches written before these attributes: has_eos True, no bias.
    /classes/names             [C]        utf-8 (prompt-ready class names)
    /classes/original_names    [C]        utf-8 (the dataset's own names)
    /text/<set>/prompt         [P]        utf-8; <set> = classname, coop, ensemble, templates, cupl (an unnamed
                                          CuPL file) or cupl:NAME (extract --cupl NAME=FILE; the paper
                                          recipes read cupl:ape and cupl:semobridge); attrs: provenance
    /text/<set>/class          [P]        int32
    /text/<set>/projected      [P, D]     float32
    /text/<set>/eos            [P, W]     float32 (pre-projection EOS feature: the text tower's pooled
                                          feature, eos @ Wt + b == projected); only when has_eos
    /lists/<split>/label       [L]        int32, labels of the split's WHOLE list (CoOp samples from it);
                                          attrs: list_sha256 (of the list's items and labels)
    /images/<split>/source     [N]        int64, sorted: the stored images' indices in that list
    /images/<split>/label      [N]        int32
    /images/<split>/path       [N]        utf-8
    /images/<split>/skipped    [N]        bool, images that could not be read (--skip-bad); attrs: count, log
    /images/<split>/views/<family>/row        [M]        int64, sorted rows of the split holding the family
    /images/<split>/views/<family>/embedding  [M, E, D]  float16 | float32, raw encode_image output
    /images/<split>/views/<family>/done       [M]        bool, resume marker; attrs: the family's recipe,
                                                         copies E, dim, dtype

Version 1 (the first release) stored /images/<split>/embedding [N, V, D] with view 0 plain, view 1
mirrored and views >= 2 random crops + flips + colour jitter (scale 0.5-1, ratio 1), one `done` [N] and
every image of every split. The reader still opens it: view 0 is the family `plain`, view 1 `flip`,
views 2.. `legacy-crops`; the whole list is the readable rows; coverage is "every image".
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

FORMAT = "clipbridge-cache"
VERSION = 2
#: Older versions the reader still opens.
READABLE_VERSIONS = (1, 2)

#: Root attributes a resumed extraction must agree on (anything else may differ between runs).
IDENTITY_ATTRS = ("model", "pretrained", "pretrained_sha256", "dataset", "image_size", "precision")
#: Root attributes a finished cache always has.
REQUIRED_ATTRS = ("format", "version", "model", "pretrained", "dataset", "created", "complete")

#: Attributes of a family's `done` dataset the writer manages itself (the rest is the family's recipe).
#: Attribute of every dataset holding its checksum, and root attribute naming the algorithm (cache.integrity).
CHECKSUM_ATTR = "checksum"
CHECKSUMS_ROOT_ATTR = "checksums"
FAMILY_MANAGED_ATTRS = ("copies", "dim", "dtype", CHECKSUM_ATTR)

STRING_DTYPE = h5py.string_dtype("utf-8")
EMBEDDING_DTYPES = (np.dtype("float16"), np.dtype("float32"))

def open_hdf5(path: str | Path, mode: str) -> h5py.File:
    """h5py.File with file locking where the filesystem supports it (NFS and some others do not)."""
    return h5py.File(path, mode, locking="best-effort")


def tmp_path(path: str | Path) -> Path:
    """The temporary file a cache is written to before it is renamed into place: "<path>.tmp"."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def default_cache_path(model: str, pretrained: str | None, dataset: str, root: str | Path = "cache") -> Path:
    """cache/<model>--<tag, or file stem + short SHA-256 of the file>/<dataset>.h5 under `root`
    (cache.weights says why a file's folder carries its hash)."""
    from clipbridge.cache.weights import cache_folder, safe_component

    return Path(root) / cache_folder(model, pretrained) / f"{safe_component(dataset)}.h5"


def list_fingerprint(items: Sequence[str], labels: Sequence[int]) -> str:
    """sha256 of a split's whole list (item names and labels, in order): a cache extended later must be
    extended from the same list."""
    digest = hashlib.sha256()
    for item, label in zip(items, labels):
        digest.update(f"{item}\t{int(label)}\n".encode("utf-8"))
    return digest.hexdigest()


def encode_attr(value: Any) -> Any:
    """An HDF5-storable attribute value: scalars and strings as they are, anything else as JSON text."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, str, np.integer, np.floating)):
        return value
    if isinstance(value, Path):
        return str(value)
    if value is None:
        return ""
    return json.dumps(value, sort_keys=True)


def decode_attr(value: Any) -> Any:
    """A plain Python value from an HDF5 attribute (numpy scalars -> int/float/bool, bytes -> str)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [decode_attr(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_attrs(obj: h5py.HLObject) -> dict[str, Any]:
    """All attributes of an HDF5 object as plain Python values."""
    return {key: decode_attr(obj.attrs[key]) for key in obj.attrs.keys()}


#: /model attributes of a cache written before they existed (every such cache holds EOS features).
TEXT_HEAD_DEFAULTS = {"has_eos": True, "has_projection_bias": False, "text_pooling": "", "projection_kind": "",
                      "eos_note": ""}


def text_head_attrs(handle: h5py.File) -> dict[str, Any]:
    """The /model attributes saying what the cache holds about the text tower's end (TEXT_HEAD_DEFAULTS
    for what an older cache does not record)."""
    stored = read_attrs(handle["model"]) if "model" in handle else {}
    return {**TEXT_HEAD_DEFAULTS, **stored}


def text_group(set_name: str) -> str:
    return f"text/{set_name}"


def split_group(split: str) -> str:
    return f"images/{split}"


def list_group(split: str) -> str:
    return f"lists/{split}"


def family_group(split: str, family: str) -> str:
    return f"images/{split}/views/{family}"
