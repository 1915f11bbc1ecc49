"""The cache file format: names, attributes and paths shared by the writer and the reader.

One HDF5 file per model x pretrained x dataset (DESIGN.md, "The cache"):

    root attrs   format="clipbridge-cache", version, model, pretrained (tag or file name),
                 pretrained_sha256 (checkpoint files only), open_clip_version, torch_version, dataset,
                 image_size, precision, split_source, created, uuid, complete
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
    /text/<set>/prompt         [P]        utf-8
    /text/<set>/class          [P]        int32
    /text/<set>/projected      [P, D]     float32
    /text/<set>/eos            [P, W]     float32 (pre-projection EOS feature: the text tower's pooled
                                          feature, eos @ Wt + b == projected); only when has_eos
    /images/<split>/embedding  [N, V, D]  float16 | float32, raw encode_image output, view 0 = plain
    /images/<split>/label      [N]        int32
    /images/<split>/path       [N]        utf-8
    /images/<split>/done       [N]        bool, resume marker (attrs: views, dim, views recipe, ...)
    /images/<split>/skipped    [N]        bool, rows that could not be read (--skip-bad), excluded on read
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

FORMAT = "clipbridge-cache"
VERSION = 1

#: Root attributes a resumed extraction must agree on (anything else may differ between runs).
IDENTITY_ATTRS = ("model", "pretrained", "pretrained_sha256", "dataset", "image_size", "precision")
#: Root attributes a finished cache always has.
REQUIRED_ATTRS = ("format", "version", "model", "pretrained", "dataset", "created", "complete")

#: Attributes of /images/<split> (the `done` dataset's attributes) the writer manages itself.
SPLIT_MANAGED_ATTRS = ("views", "dim", "dtype", "skipped_count", "skipped_log")

STRING_DTYPE = h5py.string_dtype("utf-8")
EMBEDDING_DTYPES = (np.dtype("float16"), np.dtype("float32"))

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def open_hdf5(path: str | Path, mode: str) -> h5py.File:
    """h5py.File with file locking where the filesystem supports it (NFS and some others do not)."""
    return h5py.File(path, mode, locking="best-effort")


def tmp_path(path: str | Path) -> Path:
    """The temporary file a cache is written to before it is renamed into place: "<path>.tmp"."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def pretrained_label(pretrained: str) -> str:
    """The short name of a pretrained tag or checkpoint: "openai" -> "openai", "/w/toy.pt" -> "toy"."""
    text = str(pretrained).strip()
    if "/" in text or "\\" in text or text.lower().endswith(_CHECKPOINT_SUFFIXES):
        text = Path(text).name
        for suffix in _CHECKPOINT_SUFFIXES:
            if text.lower().endswith(suffix):
                text = text[: -len(suffix)]
                break
    return text


def _safe_component(text: str) -> str:
    """A path component without separators or odd characters ("hf-hub:org/name" -> "hf-hub_org_name")."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._") or "unnamed"


def default_cache_path(model: str, pretrained: str, dataset: str, root: str | Path = "cache") -> Path:
    """cache/<model>--<pretrained-tag-or-file-stem>/<dataset>.h5 under `root`."""
    folder = f"{_safe_component(model)}--{_safe_component(pretrained_label(pretrained))}"
    return Path(root) / folder / f"{_safe_component(dataset)}.h5"


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
