"""Write a cache: into "<path>.tmp", resumable after any interruption, renamed into place by finish().

Crash safety (kill -9 at any point):
- Every dataset is created with its full size allocated up front (contiguous layout, early allocation),
  then the file is flushed. Writing embedding rows afterwards only overwrites raw bytes in place; no
  HDF5 metadata changes, so a kill in the middle of a chunk cannot break the file's structure.
- A chunk's embedding rows are written and flushed BEFORE its `done` markers are set and flushed. A row
  whose marker is not set is simply extracted again on resume; no row is duplicated or lost.
- Structural changes (new groups, datasets, attributes) are each followed by a flush. If a kill still
  leaves a .tmp that HDF5 cannot open, the writer says so and starts that file again.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from clipbridge.errors import ClipBridgeError
from clipbridge.cache.integrity import stamp
from clipbridge.cache.schema import (
    EMBEDDING_DTYPES,
    FORMAT,
    FAMILY_MANAGED_ATTRS,
    IDENTITY_ATTRS,
    STRING_DTYPE,
    VERSION,
    decode_attr,
    encode_attr,
    family_group,
    list_group,
    open_hdf5,
    read_attrs,
    split_group,
    text_group,
    text_head_attrs,
    tmp_path,
)

log = logging.getLogger(__name__)

_NEEDED_ATTRS = ("model", "pretrained", "dataset")
#: Root attributes a caller may leave out (recorded as these, and compared as these on resume).
_DEFAULT_ATTRS = {"pretrained_sha256": "", "image_size": 0, "precision": "", "split_source": ""}


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _same_attr(a: Any, b: Any) -> bool:
    """Attribute equality after HDF5 round-trip normalisation (224 == 224, "x" == b"x", None == "")."""
    return str(decode_attr(encode_attr(a))) == str(decode_attr(encode_attr(b)))


def _indices(rows: Any, size: int, where: str) -> np.ndarray:
    """rows as unique int64 indices in [0, size) (a ClipBridgeError naming `where` otherwise)."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if rows.size and (rows.min() < 0 or rows.max() >= size):
        raise ClipBridgeError(f"{where}: row indices must lie in [0, {size})")
    if np.unique(rows).size != rows.size:
        raise ClipBridgeError(f"{where}: row indices repeat")
    return rows


def _contiguous_runs(sorted_rows: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(row_start, row_stop, pos_start, pos_stop) for each run of consecutive rows in a sorted array."""
    if sorted_rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [sorted_rows.size]])
    return [(int(sorted_rows[a]), int(sorted_rows[b - 1]) + 1, int(a), int(b)) for a, b in zip(starts, stops)]


def _preallocated(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: Any) -> h5py.Dataset:
    """A contiguous dataset whose storage is allocated now (no metadata change on later row writes)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return group.create_dataset(name, shape=shape, dtype=dtype, dcpl=dcpl, fill_time="never")


class CacheWriter:
    """Writes one cache file. Use as a context manager; call finish() once everything is written.

    CacheWriter(path, attrs={model, pretrained, dataset, image_size, precision, ...}) opens
    "<path>.tmp": a fresh one, or the one an interrupted run left if its identity attributes
    (schema.IDENTITY_ATTRS) match; then `resumed` is True and ensure_family() returns the rows already done.
    overwrite=True allows replacing an existing finished cache (only when finish() succeeds);
    restart=True discards an unfinished .tmp instead of resuming it.
    """

    def __init__(self, path: str | Path, *, attrs: dict[str, Any], overwrite: bool = False,
                 restart: bool = False) -> None:
        self.path = Path(path)
        self.tmp = tmp_path(self.path)
        self.resumed = False
        missing = [key for key in _NEEDED_ATTRS if not attrs.get(key)]
        if missing:
            raise ClipBridgeError(f"{self.path}: cache attributes {', '.join(missing)} are required")
        self._attrs = {**_DEFAULT_ATTRS, **attrs}
        if self.path.exists() and not overwrite:
            raise ClipBridgeError(f"{self.path} already exists; delete it or use --overwrite to replace it")
        if restart and self.tmp.exists():
            self._remove_tmp()
        self._file = self._open_existing() if self.tmp.exists() else None
        if self._file is None:
            self._file = self._create()

    # ------------------------------------------------------------------ opening
    def _remove_tmp(self) -> None:
        try:
            self.tmp.unlink()
        except OSError as error:
            raise ClipBridgeError(f"{self.tmp}: cannot remove the unfinished cache ({error.strerror})") from None

    def _open_existing(self) -> h5py.File | None:
        """The .tmp of an interrupted run, reopened for resuming; None when it must be started again."""
        try:
            handle = open_hdf5(self.tmp, "r+")
        except OSError as error:
            text = str(error).lower()
            if "lock" in text or "already open" in text:
                raise ClipBridgeError(
                    f"{self.tmp} is open in another process (is another extraction writing it?)") from None
            if isinstance(error, PermissionError) or "permission denied" in text:
                raise ClipBridgeError(f"{self.tmp}: cannot open the unfinished cache (permission denied)") from None
            log.warning("%s is unreadable (interrupted while its structure was being written); "
                        "starting it again", self.tmp)
            self._remove_tmp()
            return None
        existing = read_attrs(handle)
        if existing.get("format") != FORMAT or existing.get("version") != VERSION:
            handle.close()
            log.warning("%s holds no resumable clipbridge cache; starting it again", self.tmp)
            self._remove_tmp()
            return None
        differing = [key for key in IDENTITY_ATTRS if not _same_attr(existing.get(key), self._attrs.get(key))]
        if differing:
            handle.close()
            detail = ", ".join(f"{k}={existing.get(k)!r} (now {self._attrs.get(k)!r})" for k in differing)
            raise ClipBridgeError(
                f"{self.tmp}: an unfinished cache with other settings is in the way: {detail}; "
                "delete it or use --restart to discard it")
        for key, value in self._attrs.items():
            if key not in IDENTITY_ATTRS and key not in ("created", "uuid", "complete", "format", "version"):
                handle.attrs[key] = encode_attr(value)
        handle.flush()
        self.resumed = True
        return handle

    def _create(self) -> h5py.File:
        try:
            self.tmp.parent.mkdir(parents=True, exist_ok=True)
            handle = open_hdf5(self.tmp, "w")
        except OSError as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise ClipBridgeError(f"{self.tmp}: cannot write the cache here ({reason})") from None
        attrs = {
            "torch_version": _package_version("torch"),
            "open_clip_version": _package_version("open_clip_torch"),
            **self._attrs,
            "format": FORMAT,
            "version": VERSION,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "uuid": uuid.uuid4().hex,
            "complete": False,
        }
        for key, value in attrs.items():
            handle.attrs[key] = encode_attr(value)
        handle.flush()
        return handle

    # ------------------------------------------------------------------ helpers
    @property
    def file(self) -> h5py.File:
        if self._file is None:
            raise ClipBridgeError(f"{self.tmp}: the cache writer is closed")
        return self._file

    def _where(self, name: str) -> str:
        return f"{self.tmp}:/{name}"

    def _replace(self, group: h5py.Group, name: str, data: Any, dtype: Any = None) -> None:
        """(Re)write a small dataset whole, skipping the write when the stored one is identical."""
        if name in group:
            stored = group[name]
            same = stored.shape == np.shape(data) and (dtype is None or stored.dtype == np.dtype(dtype))
            if same:
                values = stored.asstr()[()] if h5py.check_string_dtype(stored.dtype) else stored[()]
                if np.array_equal(np.asarray(values), np.asarray(data)):
                    return
            del group[name]
        group.create_dataset(name, data=data, dtype=dtype)

    def _group(self, name: str) -> h5py.Group:
        """The group `name` ("text/x", "images/y"), created with its parents in creation order."""
        group = self.file
        for part in name.split("/"):
            if part not in group:
                group.create_group(part, track_order=True)
            group = group[part]
        return group

    def _split(self, split: str) -> h5py.Group:
        name = split_group(split)
        if name not in self.file:
            raise ClipBridgeError(f"{self._where(name)}: split {split!r} was not started (call ensure_split)")
        return self.file[name]

    @staticmethod
    def _finite(array: np.ndarray, what: str) -> None:
        if not np.all(np.isfinite(array)):
            bad = np.argwhere(~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1))
            raise ClipBridgeError(f"{what}: non-finite values (NaN/Inf) in row {int(bad[0][0])}")

    # ------------------------------------------------------------------ model, classes, text
    def write_model(self, text_projection: np.ndarray | None, logit_scale: float, *,
                    projection_bias: np.ndarray | None = None, logit_bias: float | None = None,
                    text_head: dict[str, Any] | None = None) -> None:
        """text_projection [W, D] float32 (CLIP's Wt), or None for a cache without EOS features;
        logit_scale tau with exp() already applied; projection_bias [D], b of an affine projection
        t = e Wt + b (None: linear); logit_bias, the logit bias of sigmoid-loss models (None: none);
        text_head: /model attributes describing the text tower's end (text_pooling, projection_kind,
        eos_note). has_eos and has_projection_bias are recorded from what is given."""
        scale = float(logit_scale)
        if not np.isfinite(scale) or scale <= 0:
            raise ClipBridgeError(f"{self._where('model/logit_scale')}: must be a positive number, got {scale}")
        arrays = {"logit_scale": np.float32(scale)}
        if text_projection is not None:
            arrays["text_projection"] = self._model_array("text_projection", text_projection, "[W, D]")
        if projection_bias is not None:
            if text_projection is None:
                raise ClipBridgeError(f"{self._where('model/text_projection_bias')}: a projection bias needs "
                                      "the text projection")
            dim = arrays["text_projection"].shape[1]
            arrays["text_projection_bias"] = self._model_array("text_projection_bias", projection_bias, f"[{dim}]")
        if logit_bias is not None:
            arrays["logit_bias"] = self._model_array("logit_bias", logit_bias, "a number")
        group = self.file.require_group("model")
        for name in ("text_projection", "text_projection_bias", "logit_bias"):
            if name not in arrays and name in group:       # a resumed cache keeps only what is given now
                del group[name]
        for name, value in arrays.items():
            self._replace(group, name, value, np.float32)
        attrs = {**(text_head or {}), "has_eos": text_projection is not None,
                 "has_projection_bias": projection_bias is not None}
        for key, value in attrs.items():
            group.attrs[key] = encode_attr(value)
        self.file.flush()

    def _model_array(self, name: str, value: Any, shape: str) -> np.ndarray:
        """/model/<name> as finite float32 of the `shape` described ("[W, D]", "[4]", "a number")."""
        array = np.asarray(value, dtype=np.float32)
        wanted = {"[W, D]": 2, "a number": 0}.get(shape, 1)
        if array.ndim != wanted or 0 in array.shape or (wanted == 1 and shape != f"[{array.shape[0]}]"):
            raise ClipBridgeError(f"{self._where('model/' + name)}: expected {shape}, got {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ClipBridgeError(f"{self._where('model/' + name)}: non-finite values (NaN/Inf)")
        return array

    def _joint_dim_source(self) -> str:
        return "text_projection D" if "model/text_projection" in self.file else "the text embeddings' D"

    def _joint_dim(self) -> int | None:
        """D: the text projection's, else the first text set's (None before either is written)."""
        if "model/text_projection" in self.file:
            return int(self.file["model/text_projection"].shape[1])
        for group in self.file.get("text", {}).values():
            if "projected" in group:
                return int(group["projected"].shape[1])
        return None

    def _eos_expected(self, where: str, eos: np.ndarray | None) -> None:
        """EOS features are given exactly when the model part says the cache holds them (checked again by
        finish() when the model is written later)."""
        if "model" in self.file and text_head_attrs(self.file)["has_eos"] == (eos is None):
            state = "holds" if eos is None else "holds no"
            raise ClipBridgeError(f"{where}: the cache {state} EOS features (write_model), but eos is "
                                  f"{'missing' if eos is None else 'given'}")

    def write_classes(self, names: Sequence[str], original_names: Sequence[str] | None = None) -> None:
        """names [C] prompt-ready class names; original_names [C] the dataset's own (default: names)."""
        names = [str(n) for n in names]
        original = [str(n) for n in (names if original_names is None else original_names)]
        if not names or len(original) != len(names):
            raise ClipBridgeError(
                f"{self._where('classes')}: need C >= 1 names and as many original names "
                f"(got {len(names)} and {len(original)})")
        group = self.file.require_group("classes")
        self._replace(group, "names", np.array(names, dtype=object), STRING_DTYPE)
        self._replace(group, "original_names", np.array(original, dtype=object), STRING_DTYPE)
        self.file.flush()

    def write_text(self, set_name: str, prompts: Sequence[str], classes: np.ndarray, projected: np.ndarray,
                   eos: np.ndarray | None, attrs: dict[str, Any] | None = None) -> None:
        """One prompt set: prompts [P], classes [P] int, projected [P, D] = eos @ Wt (+ b), eos [P, W], or
        eos None when the cache holds no EOS features (write_model without a text projection).

        `attrs` records the set's provenance (templates, CuPL file and its sha256, ...).
        """
        where = self._where(text_group(set_name))
        if not set_name or "/" in set_name:
            raise ClipBridgeError(f"{where}: a text set name must be non-empty and contain no '/'")
        self._eos_expected(where, eos)
        prompts = [str(p) for p in prompts]
        classes = np.asarray(classes)
        projected = np.asarray(projected, dtype=np.float32)
        has_eos = eos is not None
        eos = np.asarray(eos if has_eos else np.zeros((len(prompts), 1)), dtype=np.float32)
        p = len(prompts)
        if (p == 0 or classes.shape != (p,) or projected.ndim != 2 or eos.ndim != 2
                or projected.shape[0] != p or eos.shape[0] != p):
            raise ClipBridgeError(
                f"{where}: expected prompts [P], class [P], projected [P, D], eos [P, W] with P >= 1; got "
                f"{p}, {classes.shape}, {projected.shape}, {eos.shape}")
        if not np.issubdtype(classes.dtype, np.integer):
            raise ClipBridgeError(f"{where}: class indices must be integers, got {classes.dtype}")
        if "model/text_projection" in self.file:
            width, dim = self.file["model/text_projection"].shape
            if projected.shape[1] != dim or eos.shape[1] != width:
                raise ClipBridgeError(
                    f"{where}: projected [P, {projected.shape[1]}] / eos [P, {eos.shape[1]}] do not match "
                    f"text_projection [{width}, {dim}]")
        elif self._joint_dim() not in (None, projected.shape[1]):
            raise ClipBridgeError(f"{where}: projected [P, {projected.shape[1]}] does not match the other text "
                                  f"sets' D = {self._joint_dim()}")
        if "classes/names" in self.file:
            count = self.file["classes/names"].shape[0]
            if classes.min() < 0 or classes.max() >= count:
                raise ClipBridgeError(f"{where}: class indices must lie in [0, {count})")
        self._finite(projected, f"{where}/projected")
        self._finite(eos, f"{where}/eos")
        group = self._group(text_group(set_name))
        self._replace(group, "prompt", np.array(prompts, dtype=object), STRING_DTYPE)
        self._replace(group, "class", classes.astype(np.int32), np.int32)
        self._replace(group, "projected", projected, np.float32)
        if has_eos:
            self._replace(group, "eos", eos, np.float32)
        for key, value in (attrs or {}).items():
            group.attrs[key] = encode_attr(value)
        self.file.flush()

    # ------------------------------------------------------------------ images
    def write_list(self, split: str, labels: np.ndarray, list_sha256: str) -> None:
        """The labels [L] of the split's WHOLE list (what CoOp samples from) and the list's fingerprint.

        On a resumed cache the stored list must be the same (else the .tmp belongs to other data)."""
        where = self._where(list_group(split))
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
            raise ClipBridgeError(f"{where}: need L >= 1 integer labels, got {labels.shape} {labels.dtype}")
        if list_group(split) in self.file:
            group = self.file[list_group(split)]
            if group.attrs.get("list_sha256") != list_sha256 or not np.array_equal(group["label"][()], labels):
                raise ClipBridgeError(f"{where}: the unfinished cache was started on another {split} list; "
                                      "delete it or use --restart to discard it")
            return
        group = self._group(list_group(split))
        group.create_dataset("label", data=labels.astype(np.int32))
        group.attrs["list_sha256"] = list_sha256
        self.file.flush()

    def ensure_split(self, split: str, *, source: np.ndarray, labels: np.ndarray, paths: Sequence[str]) -> None:
        """The stored images of `split`: source [N] sorted indices into its whole list (write_list first),
        labels [N], paths [N]. A resumed cache must hold the same rows."""
        where = self._where(split_group(split))
        if not split or "/" in split:
            raise ClipBridgeError(f"{where}: a split name must be non-empty and contain no '/'")
        source = np.asarray(source, dtype=np.int64)
        labels = np.asarray(labels)
        paths = [str(p) for p in paths]
        n = len(paths)
        if n == 0 or labels.shape != (n,) or source.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise ClipBridgeError(f"{where}: need N >= 1 integer labels, sources and paths, got {labels.shape}, "
                                  f"{source.shape} and {n}")
        if np.any(np.diff(source) <= 0) or source[0] < 0:
            raise ClipBridgeError(f"{where}: source indices must be sorted, unique and >= 0")
        if list_group(split) in self.file:
            whole = self.file[list_group(split)]["label"]
            if source[-1] >= whole.shape[0] or not np.array_equal(whole[()][source], labels):
                raise ClipBridgeError(f"{where}: rows do not match the split's whole list ({whole.shape[0]} images)")
        if split_group(split) in self.file and "skipped" in self.file[split_group(split)]:
            group = self.file[split_group(split)]
            if (not np.array_equal(group["source"][()], source) or not np.array_equal(group["label"][()], labels)
                    or list(group["path"].asstr()[()]) != paths):
                raise ClipBridgeError(f"{where}: the unfinished cache was started with other images; "
                                      "delete it or use --restart to discard it")
            return
        if split_group(split) in self.file:   # killed while the row table was being created
            del self.file[split_group(split)]
        group = self._group(split_group(split))
        group.create_dataset("source", data=source)
        group.create_dataset("label", data=labels.astype(np.int32))
        group.create_dataset("path", data=np.array(paths, dtype=object), dtype=STRING_DTYPE)
        skipped = group.create_dataset("skipped", data=np.zeros(n, dtype=bool))
        skipped.attrs.update({"count": 0, "log": "[]"})
        self.file.flush()

    def ensure_family(self, split: str, family: str, *, rows: np.ndarray, copies: int, dim: int,
                      dtype: Any = np.float16, recipe: dict[str, Any] | None = None) -> np.ndarray:
        """Create the view family `family` of `split` (embedding [M, copies, dim] of `dtype` for the sorted
        split rows `rows` [M]), or check the one a resumed run made. Returns done [M]: True where written
        (or skipped) already. `recipe` (how the views are made) is stored on `done` and checked on resume."""
        where = self._where(family_group(split, family))
        rows = np.asarray(rows, dtype=np.int64)
        dtype = np.dtype(dtype)
        if not family or "/" in family:
            raise ClipBridgeError(f"{where}: a family name must be non-empty and contain no '/'")
        if dtype not in EMBEDDING_DTYPES:
            raise ClipBridgeError(f"{where}: embedding dtype must be float16 or float32, got {dtype}")
        n = self._split(split)["source"].shape[0]
        if rows.ndim != 1 or rows.size == 0 or np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= n:
            raise ClipBridgeError(f"{where}: rows must be sorted, unique indices in [0, {n})")
        if int(copies) < 1 or int(dim) < 1:
            raise ClipBridgeError(f"{where}: copies and dim must be >= 1, got {copies} and {dim}")
        if self._joint_dim() not in (None, int(dim)):
            raise ClipBridgeError(f"{where}: embedding dim {dim} differs from {self._joint_dim_source()} "
                                  f"{self._joint_dim()}")
        shape = (rows.size, int(copies), int(dim))
        stored_recipe = {key: encode_attr(value) for key, value in (recipe or {}).items()}
        name = family_group(split, family)
        if name in self.file:
            group = self.file[name]
            if all(part in group for part in ("row", "embedding", "done")):
                return self._check_resumed_family(group, where, rows, shape, dtype, stored_recipe)
            del self.file[name]           # killed while the family's datasets were being created
        group = self._group(name)
        group.create_dataset("row", data=rows)
        _preallocated(group, "embedding", shape, dtype)
        done = group.create_dataset("done", data=np.zeros(rows.size, dtype=bool))
        for key, value in stored_recipe.items():
            done.attrs[key] = value
        done.attrs.update({"copies": int(copies), "dim": int(dim), "dtype": dtype.name})
        skipped = self._split(split)["skipped"][()][rows]
        if skipped.any():
            done[skipped] = True
        self.file.flush()
        return done[()]

    @staticmethod
    def _check_resumed_family(group: h5py.Group, where: str, rows: np.ndarray, shape: tuple[int, ...],
                              dtype: np.dtype, recipe: dict[str, Any]) -> np.ndarray:
        stored = {k: v for k, v in read_attrs(group["done"]).items() if k not in FAMILY_MANAGED_ATTRS}
        problems = []
        if group["embedding"].shape != shape or group["embedding"].dtype != dtype:
            problems.append(f"embedding {group['embedding'].shape} {group['embedding'].dtype} (now {shape} {dtype})")
        if not np.array_equal(group["row"][()], rows):
            problems.append("its rows")
        if set(stored) != set(recipe) or any(not _same_attr(stored[k], recipe[k]) for k in recipe):
            problems.append(f"recipe {stored} (now {recipe})")
        if problems:
            raise ClipBridgeError(f"{where}: the unfinished cache was started with other {'; '.join(problems)}; "
                                  "delete it or use --restart to discard it")
        return group["done"][()]

    def done(self, split: str, family: str) -> np.ndarray:
        """[M] bool: rows of the family written (or skipped) so far."""
        return self._family(split, family)["done"][()]

    def _family(self, split: str, family: str) -> h5py.Group:
        name = family_group(split, family)
        if name not in self.file:
            raise ClipBridgeError(f"{self._where(name)}: view family {family!r} of {split!r} was not started "
                                  "(call ensure_family)")
        return self.file[name]

    def write_views(self, split: str, family: str, positions: Any, embedding: np.ndarray) -> None:
        """Store embedding [n, E, D] at `positions` [n] of the family's rows, flush, then mark those done and
        flush (a kill in between leaves them not done: they are encoded again on resume)."""
        group = self._family(split, family)
        where = self._where(family_group(split, family))
        positions = _indices(positions, group["done"].shape[0], where)
        dataset = group["embedding"]
        values = np.asarray(embedding)
        if values.shape != (positions.size, *dataset.shape[1:]):
            raise ClipBridgeError(f"{where}: embedding for {positions.size} rows must be "
                                  f"[{positions.size}, {dataset.shape[1]}, {dataset.shape[2]}], got {values.shape}")
        values = values.astype(dataset.dtype, copy=False)
        if not np.all(np.isfinite(values)):
            bad = positions[~np.isfinite(values.reshape(positions.size, -1)).all(axis=1)]
            row = int(group["row"][int(bad[0])])
            path = self._split(split)["path"].asstr()[row]
            raise ClipBridgeError(f"{where}: non-finite embedding (NaN/Inf in {dataset.dtype}) for row {row} ({path})")
        order = np.argsort(positions, kind="stable")
        positions, values = positions[order], values[order]
        runs = _contiguous_runs(positions)
        for start, stop, a, b in runs:
            dataset[start:stop] = values[a:b]
        self.file.flush()
        done = group["done"]
        for start, stop, _, _ in runs:
            done[start:stop] = True
        self.file.flush()

    def write_family(self, split: str, family: str, embedding: np.ndarray, *, dtype: Any = np.float32,
                     recipe: dict[str, Any] | None = None) -> None:
        """A whole family at once for every row of the split: embedding [N, E, D] (synthetic caches, tests)."""
        values = np.asarray(embedding)
        rows = np.arange(values.shape[0])
        self.ensure_family(split, family, rows=rows, copies=values.shape[1], dim=values.shape[2], dtype=dtype,
                           recipe=recipe)
        self.write_views(split, family, rows, values)

    def mark_skipped(self, split: str, rows: Any, reason: str) -> None:
        """Mark split rows whose image could not be read (--skip-bad): skipped, done in every family that
        holds them, counted and logged."""
        group = self._split(split)
        where = self._where(split_group(split))
        rows = _indices(rows, group["source"].shape[0], where)
        if rows.size == 0:
            return
        skipped = group["skipped"]
        for start, stop, _, _ in _contiguous_runs(np.sort(rows)):
            skipped[start:stop] = True
        for family in group.get("views", {}).values():
            hit = np.isin(family["row"][()], rows)
            if hit.any():
                done = family["done"][()]
                done[hit] = True
                family["done"][...] = done
        paths = group["path"].asstr()
        entries = json.loads(skipped.attrs.get("log", "[]"))
        entries += [{"row": int(r), "path": paths[int(r)], "reason": str(reason)} for r in rows]
        skipped.attrs["log"] = json.dumps(entries)
        skipped.attrs["count"] = int(skipped[()].sum())
        self.file.flush()

    def set_attrs(self, **attrs: Any) -> None:
        """Root attributes that describe the content (coverage, extract_args, ...), overwritten as given."""
        for key, value in attrs.items():
            self.file.attrs[key] = encode_attr(value)
        self.file.flush()

    # ------------------------------------------------------------------ finishing
    def _check_complete(self) -> None:
        has_eos = text_head_attrs(self.file)["has_eos"]
        needed = ("model/text_projection",) * has_eos + ("model/logit_scale", "classes/names")
        missing = [name for name in needed if name not in self.file]
        if missing:
            raise ClipBridgeError(f"{self.tmp}: cannot finish, {', '.join(missing)} not written")
        if not len(self.file.get("text", {})):
            raise ClipBridgeError(f"{self.tmp}: cannot finish, no text set written")
        if not len(self.file.get("images", {})):
            raise ClipBridgeError(f"{self.tmp}: cannot finish, no image split written")
        count = self.file["classes/names"].shape[0]
        dim = self._joint_dim()
        width = self.file["model/text_projection"].shape[0] if has_eos else None
        for name, group in self.file["text"].items():
            widths = (group["projected"].shape[1], group["eos"].shape[1] if "eos" in group else None)
            if widths != (dim, width):
                raise ClipBridgeError(
                    f"{self._where(text_group(name))}: projected/eos widths {widths[0]}/{widths[1]} do not "
                    f"match D = {dim}, W = {width}")
            classes = group["class"][()]
            if classes.min() < 0 or classes.max() >= count:
                raise ClipBridgeError(f"{self._where(text_group(name))}: class indices must lie in [0, {count})")
        for split, group in self.file["images"].items():
            if list_group(split) not in self.file:
                raise ClipBridgeError(f"{self.tmp}: cannot finish, the whole list of split {split!r} is missing")
            families = group.get("views", {})
            if not len(families):
                raise ClipBridgeError(f"{self.tmp}: cannot finish, split {split!r} has no view family")
            for family, views in families.items():
                if views["embedding"].shape[2] != dim:
                    raise ClipBridgeError(f"{self._where(family_group(split, family))}: embedding dim "
                                          f"{views['embedding'].shape[2]} differs from {self._joint_dim_source()} "
                                          f"{dim}")
                done = views["done"][()]
                if not done.all():
                    raise ClipBridgeError(f"{self.tmp}: cannot finish, view family {family!r} of split {split!r} "
                                          f"has {int(done.sum())}/{done.size} rows done")
            labels = group["label"][()]
            if labels.min() < 0 or labels.max() >= count:
                raise ClipBridgeError(f"{self._where(split_group(split))}: labels must lie in [0, {count})")

    def finish(self) -> Path:
        """Check that everything is written, stamp every dataset's checksum (cache.integrity), mark the cache
        complete and rename it into place."""
        self._check_complete()
        stamp(self.file)
        self.file.attrs["complete"] = True
        self.file.flush()
        self.close()
        with open(self.tmp, "rb") as handle:
            os.fsync(handle.fileno())
        try:
            os.replace(self.tmp, self.path)
        except OSError as error:
            raise ClipBridgeError(f"{self.path}: cannot move the finished cache into place ({error.strerror})") \
                from None
        return self.path

    def close(self) -> None:
        """Close the .tmp without finishing (a later CacheWriter on the same path resumes it)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
