"""Read a cache: open_cache() validates the whole file and refuses anything it could not trust.

Refused (ClipBridgeError naming the file): not HDF5, another format or an unknown version, an unfinished
cache, a view family with rows not done, shapes that disagree, NaN/Inf values (naming the split, family and
row), and a cache of another model/pretrained than the one asked for.

Format versions 2 (view families, sampled coverage) and 1 (one [N, V, D] block per split, every image) are
read through the same interface (schema.py says how version 1 maps onto families). Embeddings are read on
demand, only the rows asked for. torch is imported only when tensors are asked for (so `info` stays quick).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from clipbridge.cache.coverage import Coverage
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.integrity import (DamagedCacheError, RunningChecksum, check_value, damage_guard,
                                        has_checksums, rebuild_hint, verify_rest)
from clipbridge.cache.weights import check_weights
from clipbridge.cache.schema import (FAMILY_MANAGED_ATTRS, FORMAT, READABLE_VERSIONS, family_group, list_group,
                                     open_hdf5, read_attrs, split_group, text_group,
                                     text_head_attrs, tmp_path)

#: Rows checked for NaN/Inf per read while validating (bounds memory on very large splits).
_CHECK_ROWS = 65536
#: Version-1 views and the family each maps onto: (family, first view, last view + 1 or None = to the end).
V1_FAMILIES = (("plain", 0, 1), ("flip", 1, 2), ("legacy-crops", 2, None))


@dataclass(frozen=True)
class TextPrompts:
    """Per-prompt text of one or more prompt sets, concatenated (every prompt has equal weight).

    prompts [P] str; classes [P] int64; projected [P, D] float32 = eos @ Wt (+ b); eos [P, W] float32, or
    None when the cache holds no EOS features.
    """

    prompts: list[str]
    classes: torch.Tensor
    projected: torch.Tensor
    eos: torch.Tensor | None


@dataclass(frozen=True)
class SplitRows:
    """The stored images of one split (readable or not): source [N] int64 sorted indices into the split's
    whole list, labels [N] int64, paths [N], skipped [N] bool (unreadable at extraction, --skip-bad)."""

    source: np.ndarray
    labels: np.ndarray
    paths: list[str]
    skipped: np.ndarray


@dataclass(frozen=True)
class FamilyInfo:
    """One view family of one split: copies E per image, the split rows holding it [M] (sorted), storage."""

    name: str
    copies: int
    rows: np.ndarray
    dtype: str
    nbytes: int
    recipe: dict[str, Any]


def sorted_positions(sorted_values: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions [n], found [n] bool) of `values` in the sorted unique array `sorted_values`."""
    positions = np.searchsorted(sorted_values, values)
    found = positions < sorted_values.size
    found[found] = sorted_values[positions[found]] == values[found]
    return positions, found


def _read_rows(dataset: h5py.Dataset, index: np.ndarray) -> np.ndarray:
    """dataset[index] for any int index [n] (any order, repeats allowed), read as contiguous runs."""
    if index.size == 0:
        return np.empty((0, *dataset.shape[1:]), dtype=dataset.dtype)
    unique, inverse = np.unique(index, return_inverse=True)
    breaks = np.flatnonzero(np.diff(unique) != 1) + 1
    parts = [dataset[int(run[0]):int(run[-1]) + 1] for run in np.split(unique, breaks)]
    return np.concatenate(parts)[inverse]


class _Layout:
    """Where one format version keeps rows and views (the Cache's only view of the file's image part)."""

    def __init__(self, handle: h5py.File):
        self.splits = list(handle["images"].keys()) if "images" in handle else []

    def rows(self, handle: h5py.File, split: str) -> SplitRows:
        raise NotImplementedError

    def list_labels(self, handle: h5py.File, split: str) -> np.ndarray:
        raise NotImplementedError

    def families(self, handle: h5py.File, split: str) -> dict[str, FamilyInfo]:
        raise NotImplementedError

    def read(self, handle: h5py.File, split: str, family: str, positions: np.ndarray) -> np.ndarray:
        """Embeddings [n, E, D] of the family's rows at `positions` [n] (indices into FamilyInfo.rows)."""
        raise NotImplementedError


class _LayoutV2(_Layout):
    def rows(self, handle, split):
        group = handle[split_group(split)]
        return SplitRows(group["source"][()].astype(np.int64), group["label"][()].astype(np.int64),
                         list(group["path"].asstr()[()]), group["skipped"][()].astype(bool))

    def list_labels(self, handle, split):
        return handle[list_group(split)]["label"][()].astype(np.int64)

    def families(self, handle, split):
        out = {}
        for name, group in handle[split_group(split)].get("views", {}).items():
            embedding = group["embedding"]
            recipe = {k: v for k, v in read_attrs(group["done"]).items() if k not in FAMILY_MANAGED_ATTRS}
            out[name] = FamilyInfo(name, int(embedding.shape[1]), group["row"][()].astype(np.int64),
                                   embedding.dtype.name, int(np.prod(embedding.shape)) * embedding.dtype.itemsize,
                                   recipe)
        return out

    def read(self, handle, split, family, positions):
        return _read_rows(handle[family_group(split, family)]["embedding"], positions)


class _LayoutV1(_Layout):
    """Version 1: /images/<split>/embedding [N, V, D]; skipped rows are left out (the whole list is the readable
    rows, as that version's sampler saw it)."""

    def _kept(self, handle, split) -> np.ndarray:
        group = handle[split_group(split)]
        n = group["label"].shape[0]
        return ~group["skipped"][()] if "skipped" in group else np.ones(n, dtype=bool)

    def rows(self, handle, split):
        group = handle[split_group(split)]
        kept = self._kept(handle, split)
        count = int(kept.sum())
        return SplitRows(np.arange(count), group["label"][()][kept].astype(np.int64),
                         list(group["path"].asstr()[()][kept]), np.zeros(count, dtype=bool))

    def list_labels(self, handle, split):
        return self.rows(handle, split).labels

    def families(self, handle, split):
        embedding = handle[split_group(split)]["embedding"]
        count = int(self._kept(handle, split).sum())
        recipe = {k: v for k, v in read_attrs(handle[split_group(split)]["done"]).items()
                  if k not in ("views", "dim", "dtype", "skipped_count", "skipped_log")}
        out = {}
        for name, first, last in V1_FAMILIES:
            copies = len(range(embedding.shape[1])[first:last])
            if copies:
                out[name] = FamilyInfo(name, copies, np.arange(count), embedding.dtype.name,
                                       count * copies * embedding.shape[2] * embedding.dtype.itemsize,
                                       {"family": name, "format_version": 1, **recipe})
        return out

    def read(self, handle, split, family, positions):
        first, last = next((a, b) for name, a, b in V1_FAMILIES if name == family)
        stored = np.flatnonzero(self._kept(handle, split))[positions]
        return _read_rows(handle[split_group(split)]["embedding"], stored)[:, first:last]


def _tensor(array: np.ndarray | None):
    """torch.from_numpy(array) (None stays None); torch imported here, on first use."""
    import torch

    return None if array is None else torch.from_numpy(np.ascontiguousarray(array))


class Cache:
    """A validated cache file. Small parts (model, classes, attrs) are held; text and views read on demand.

    text_projection Wt [W, D] (None without EOS features), text_projection_bias b [D] of an affine
    projection (None: linear, also for caches older than the bias), logit_bias (None: the model has none),
    text_head: the /model attributes (has_eos, has_projection_bias, text_pooling, projection_kind, eos_note).
    """

    def __init__(self, path: Path, attrs: dict[str, Any], classnames: list[str], original_classnames: list[str],
                 text_projection: np.ndarray | None, logit_scale: float, text_sets: list[str], layout: _Layout,
                 text_projection_bias: np.ndarray | None = None, logit_bias: float | None = None,
                 text_head: dict[str, Any] | None = None):
        self.path = path
        self.attrs = attrs
        self.classnames = classnames
        self.original_classnames = original_classnames
        self._projection, self._bias = text_projection, text_projection_bias
        self.logit_scale = logit_scale
        self._text_sets = text_sets
        self._layout = layout
        self._families: dict[str, dict[str, FamilyInfo]] = {}
        self.logit_bias = logit_bias
        self.text_head = dict(text_head or {"has_eos": text_projection is not None})

    @property
    def text_projection(self):
        """Wt [W, D] float32 tensor (None without EOS features)."""
        return _tensor(self._projection)

    @property
    def text_projection_bias(self):
        """b [D] float32 tensor of an affine text projection (None: linear)."""
        return _tensor(self._bias)

    @property
    def has_eos(self) -> bool:
        """Whether the cache holds EOS features and the text projection Wt."""
        return self._projection is not None

    def __repr__(self) -> str:
        return (f"Cache({str(self.path)!r}, model={self.attrs.get('model')!r}, "
                f"pretrained={self.attrs.get('pretrained')!r}, classes={len(self.classnames)}, "
                f"text_sets={self._text_sets}, splits={self.splits})")

    @property
    def text_sets(self) -> list[str]:
        return list(self._text_sets)

    @property
    def splits(self) -> list[str]:
        return list(self._layout.splits)

    @property
    def version(self) -> int:
        return int(self.attrs.get("version", 0))

    @property
    def coverage(self) -> Coverage:
        """Which images the cache holds (cache.coverage.Coverage; version 1: every image)."""
        value = self.attrs.get("coverage")
        return Coverage.from_attr(json.loads(value) if isinstance(value, str) and value else None)

    @property
    def extract_args(self) -> dict[str, Any]:
        """The options `extract` was run with (for hints naming the command that extends the cache)."""
        value = self.attrs.get("extract_args")
        return json.loads(value) if isinstance(value, str) and value else {}

    @property
    def cache_id(self) -> str:
        """12 hex characters identifying this extraction (stable across copies and moves of the file)."""
        key = "|".join(str(self.attrs.get(k, "")) for k in
                       ("uuid", "created", "model", "pretrained", "pretrained_sha256", "dataset"))
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]

    def _open(self) -> h5py.File:
        try:
            return open_hdf5(self.path, "r")
        except OSError as error:
            raise ClipBridgeError(f"{self.path}: cannot read the cache any more ({error})") from None

    @contextlib.contextmanager
    def _reading(self, name: str):
        """The open file, with h5py's errors on damaged bytes under `name` turned into one line."""
        with damage_guard(self.path, [name], self.attrs):
            with self._open() as handle:
                yield handle

    def _check_split(self, name: str) -> None:
        if name not in self.splits:
            raise ClipBridgeError(f"{self.path}: unknown split {name!r}; known: {', '.join(self.splits)}")

    def text(self, set_names: Sequence[str] | str) -> TextPrompts:
        """The prompts of the named sets, concatenated in the order given."""
        names = [set_names] if isinstance(set_names, str) else list(set_names)
        if not names:
            raise ClipBridgeError(f"{self.path}: no text set asked for; known: {', '.join(self._text_sets)}")
        unknown = [n for n in names if n not in self._text_sets]
        if unknown:
            raise ClipBridgeError(
                f"{self.path}: unknown text set {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(self._text_sets)}")
        prompts, classes, projected, eos = [], [], [], []
        with self._reading("text") as handle:
            for name in names:
                group = handle[text_group(name)]
                prompts += list(group["prompt"].asstr()[()])
                classes.append(group["class"][()].astype(np.int64))
                projected.append(group["projected"][()].astype(np.float32, copy=False))
                if self.has_eos:
                    eos.append(group["eos"][()].astype(np.float32, copy=False))
        return TextPrompts(prompts, _tensor(np.concatenate(classes)), _tensor(np.concatenate(projected)),
                           _tensor(np.concatenate(eos)) if self.has_eos else None)

    def text_attrs(self, set_name: str) -> dict[str, Any]:
        """The provenance attributes of one prompt set (templates, CuPL file and its sha256, ...)."""
        self.text(set_name)            # refuses an unknown set
        with self._reading(text_group(set_name)) as handle:
            return read_attrs(handle[text_group(set_name)])

    def rows(self, split: str) -> SplitRows:
        """The stored images of `split` (cache.reader.SplitRows)."""
        self._check_split(split)
        with self._reading(split_group(split)) as handle:
            return self._layout.rows(handle, split)

    def list_labels(self, split: str) -> np.ndarray:
        """[L] labels of the split's whole list, the list CoOp's sampler draws from."""
        self._check_split(split)
        with self._reading(list_group(split)) as handle:
            return self._layout.list_labels(handle, split)

    def families(self, split: str) -> dict[str, FamilyInfo]:
        """The view families stored for `split`, by name."""
        self._check_split(split)
        if split not in self._families:
            with self._reading(split_group(split)) as handle:
                self._families[split] = self._layout.families(handle, split)
        return dict(self._families[split])

    def family(self, split: str, name: str) -> FamilyInfo:
        families = self.families(split)
        if name not in families:
            raise ClipBridgeError(f"{self.path}: split {split!r} holds no view family {name!r} "
                                  f"(it has {', '.join(families) or 'none'})")
        return families[name]

    def views(self, split: str, family: str, rows: np.ndarray | None = None) -> torch.Tensor:
        """Raw embeddings [n, E, D] float32 of the family's views for split rows `rows` [n] (any order; None =
        every row holding the family, in row order). A row without the family is a ClipBridgeError."""
        info = self.family(split, family)
        if rows is None:
            positions = np.arange(info.rows.size)
        else:
            rows = np.asarray(rows, dtype=np.int64)
            positions, found = sorted_positions(info.rows, rows)
            if not found.all():
                raise ClipBridgeError(f"{self.path}: row {int(rows[~found][0])} of split {split!r} has no "
                                      f"{family!r} views")
        with self._reading(family_group(split, family)) as handle:
            values = self._layout.read(handle, split, family, positions)
        return _tensor(values).float()                                      # torch casts f16 faster

    def plain(self, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Plain-view embeddings [N, D] float32, labels [N] int64 and paths of the split's readable images."""
        rows = self.rows(split)
        keep = np.flatnonzero(~rows.skipped)
        embedding = self.views(split, "plain", keep)[:, 0]
        return embedding, _tensor(rows.labels[keep]), [rows.paths[i] for i in keep]

    def split_counts(self) -> dict[str, int]:
        """Readable images per split, without reading any embedding."""
        return {name: int((~self.rows(name).skipped).sum()) for name in self.splits}


# ---------------------------------------------------------------------- validation
class _Validator:
    """Checks one open file; every failure is a ClipBridgeError starting with the file's path."""

    def __init__(self, path: Path, handle: h5py.File):
        self.path = path
        self.file = handle
        #: [the object being read], for the message of a damaged file; the root attributes once read.
        self.where = [""]
        self.root_attrs: dict[str, Any] = {}
        #: Whether the cache carries checksums (cache.integrity), and the datasets already checked.
        self.checked = False
        self.verified: set[str] = set()

    def fail(self, problem: str) -> None:
        raise ClipBridgeError(f"{self.path}: {problem}")

    def dataset(self, name: str, ndim: int) -> h5py.Dataset:
        self.where[0] = name
        if name not in self.file or not isinstance(self.file[name], h5py.Dataset):
            self.fail(f"missing dataset /{name}")
        dataset = self.file[name]
        if dataset.ndim != ndim:
            self.fail(f"/{name} has {dataset.ndim} dimensions {dataset.shape}, expected {ndim}")
        return dataset

    def finite_rows(self, dataset: h5py.Dataset, what: str, skip: np.ndarray | None = None) -> None:
        """Refuse NaN/Inf, naming `what` and the first bad row (rows where skip is True are ignored); on a
        cache with checksums, check the dataset's from the same reads."""
        self.where[0] = dataset.name
        n = dataset.shape[0]
        running = RunningChecksum(dataset.dtype) if self.checked else None
        for start in range(0, n, _CHECK_ROWS):
            block = dataset[start:start + _CHECK_ROWS]
            if running is not None:
                running.update(block)
            bad = ~np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)
            if skip is not None:
                bad &= ~skip[start:start + _CHECK_ROWS]
            if bad.any():
                rows = np.flatnonzero(bad) + start
                if running is not None:    # damage first: NaN in a checked file is damage, not bad input
                    for rest in range(start + _CHECK_ROWS, n, _CHECK_ROWS):
                        running.update(dataset[rest:rest + _CHECK_ROWS])
                    check_value(self.path, dataset, running.value, self.root_attrs)
                self.fail(f"{what} has NaN/Inf values in row {int(rows[0])}"
                          + (f" (and {rows.size - 1} more rows)" if rows.size > 1 else ""))
        if running is not None:
            check_value(self.path, dataset, running.value, self.root_attrs)
            self.verified.add(dataset.name)

    def attrs(self) -> dict[str, Any]:
        attrs = read_attrs(self.file)
        self.root_attrs.update(attrs)
        self.checked = has_checksums(self.file)
        if attrs.get("format") != FORMAT:
            self.fail(f"not a clipbridge cache (format attribute is {attrs.get('format')!r}, "
                      f"expected {FORMAT!r})")
        if attrs.get("version") not in READABLE_VERSIONS:
            self.fail(f"cache format version {attrs.get('version')!r} is not supported (this clipbridge reads "
                      f"versions {', '.join(map(str, READABLE_VERSIONS))}); extract it again")
        if attrs.get("complete") is not True:
            self.fail("the cache is incomplete (extraction did not finish); run extract again to resume it")
        for key in ("model", "pretrained", "dataset"):
            if not attrs.get(key):
                self.fail(f"root attribute {key!r} is missing")
        return attrs

    def model(self) -> tuple[np.ndarray | None, float]:
        """(Wt [W, D] or None without EOS features, τ)."""
        projection = None
        if text_head_attrs(self.file)["has_eos"]:
            projection = self.dataset("model/text_projection", 2)[()].astype(np.float32)
            if 0 in projection.shape:
                self.fail(f"/model/text_projection is empty {projection.shape}")
            self.finite_rows(self.file["model/text_projection"], "/model/text_projection")
        scale = self.dataset("model/logit_scale", 0)[()]
        if not np.isfinite(scale) or scale <= 0:
            self.fail(f"/model/logit_scale is {scale}, expected a positive number")
        return projection, float(scale)

    def biases(self, dim: int) -> tuple[np.ndarray | None, float | None]:
        """(projection bias b [D] or None, logit bias or None); an older cache has neither."""
        bias = logit_bias = None
        if "model/text_projection_bias" in self.file:
            bias = self.dataset("model/text_projection_bias", 1)[()].astype(np.float32)
            if bias.shape != (dim,) or not np.all(np.isfinite(bias)):
                self.fail(f"/model/text_projection_bias is {bias.shape} (expected [{dim}]) or not finite")
        if "model/logit_bias" in self.file:
            logit_bias = float(self.dataset("model/logit_bias", 0)[()])
            if not np.isfinite(logit_bias):
                self.fail(f"/model/logit_bias is {logit_bias}, expected a finite number")
        return bias, logit_bias

    def classes(self) -> tuple[list[str], list[str]]:
        names = list(self.dataset("classes/names", 1).asstr()[()])
        if not names:
            self.fail("/classes/names is empty")
        original = names
        if "classes/original_names" in self.file:
            original = list(self.dataset("classes/original_names", 1).asstr()[()])
            if len(original) != len(names):
                self.fail(f"/classes/original_names has {len(original)} names, /classes/names {len(names)}")
        return names, original

    def text_set(self, name: str, width: int | None, dim: int, count: int) -> None:
        """Check one text set; width None: the cache holds no EOS features (and the set has no eos)."""
        base = text_group(name)
        prompts = self.dataset(f"{base}/prompt", 1)
        classes = self.dataset(f"{base}/class", 1)
        projected = self.dataset(f"{base}/projected", 2)
        p = prompts.shape[0]
        eos = self.dataset(f"{base}/eos", 2) if width is not None else np.zeros((p, 0))
        if p == 0 or classes.shape[0] != p or projected.shape != (p, dim) or eos.shape != (p, width or 0):
            self.fail(f"text set {name!r} shapes disagree: prompt {prompts.shape}, class {classes.shape}, "
                      f"projected {projected.shape} (expected [{p}, {dim}]), eos {eos.shape} "
                      f"(expected [{p}, {width}] to match text_projection [{width}, {dim}])")
        labels = classes[()]
        if labels.min() < 0 or labels.max() >= count:
            self.fail(f"text set {name!r} has class indices outside [0, {count})")
        self.finite_rows(projected, f"text set {name!r} /projected")
        if width is not None:
            self.finite_rows(eos, f"text set {name!r} /eos")

    def labels(self, values: np.ndarray, what: str, count: int) -> None:
        if values.size and (values.min() < 0 or values.max() >= count):
            self.fail(f"{what} has labels outside [0, {count})")

    def split_v2(self, name: str, dim: int, count: int) -> None:
        base = split_group(name)
        source = self.dataset(f"{base}/source", 1)[()]
        labels = self.dataset(f"{base}/label", 1)[()]
        paths = self.dataset(f"{base}/path", 1)
        skipped = self.dataset(f"{base}/skipped", 1)[()]
        n = source.shape[0]
        if n == 0 or any(x.shape[0] != n for x in (labels, paths, skipped)):
            self.fail(f"split {name!r} row table disagrees: source {source.shape}, label {labels.shape}, "
                      f"path {paths.shape}, skipped {skipped.shape}")
        whole = self.dataset(f"{list_group(name)}/label", 1)[()]
        if np.any(np.diff(source) <= 0) or source[0] < 0 or source[-1] >= whole.shape[0]:
            self.fail(f"split {name!r} source indices are not sorted indices into its list of {whole.shape[0]}")
        if not np.array_equal(whole[source], labels):
            self.fail(f"split {name!r} labels differ from its whole list's labels")
        self.labels(whole, f"split {name!r} list", count)
        families = self.file[base].get("views", {})
        if not len(families):
            self.fail(f"split {name!r} holds no view family")
        for family, group in families.items():
            where = f"view family {family!r} of split {name!r}"
            rows = self.dataset(f"{family_group(name, family)}/row", 1)[()]
            embedding = self.dataset(f"{family_group(name, family)}/embedding", 3)
            done = self.dataset(f"{family_group(name, family)}/done", 1)[()]
            m = rows.shape[0]
            if m == 0 or embedding.shape[0] != m or done.shape[0] != m or embedding.shape[2] != dim:
                self.fail(f"{where} is {embedding.shape} for {m} rows, expected [{m}, E, {dim}] (D of "
                          f"text_projection)")
            if np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= n:
                self.fail(f"{where} rows are not sorted rows of the split")
            if embedding.dtype not in (np.float16, np.float32):
                self.fail(f"{where} dtype is {embedding.dtype}, expected float16 or float32")
            if not done.all():
                self.fail(f"{where} is incomplete: {int(done.sum())}/{m} rows done; run extract again to resume it")
            self.finite_rows(embedding, where, skipped[rows])

    def split_v1(self, name: str, dim: int, count: int) -> None:
        base = split_group(name)
        embedding = self.dataset(f"{base}/embedding", 3)
        labels = self.dataset(f"{base}/label", 1)
        paths = self.dataset(f"{base}/path", 1)
        done = self.dataset(f"{base}/done", 1)
        n = embedding.shape[0]
        if n == 0 or embedding.shape[1] < 1 or embedding.shape[2] != dim:
            self.fail(f"split {name!r} embedding is {embedding.shape}, expected [N >= 1, V >= 1, {dim}] "
                      f"(D of text_projection)")
        if embedding.dtype not in (np.float16, np.float32):
            self.fail(f"split {name!r} embedding dtype is {embedding.dtype}, expected float16 or float32")
        for what, dataset in (("label", labels), ("path", paths), ("done", done)):
            if dataset.shape[0] != n:
                self.fail(f"split {name!r} has {dataset.shape[0]} {what} entries for {n} embeddings")
        marks = done[()]
        if not marks.all():
            self.fail(f"split {name!r} is incomplete: {int(marks.sum())}/{n} rows done; "
                      "run extract again to resume it")
        skip = self.dataset(f"{base}/skipped", 1)[()] if "skipped" in self.file[base] else np.zeros(n, bool)
        if skip.shape[0] != n:
            self.fail(f"split {name!r} has {skip.shape[0]} skipped markers for {n} embeddings")
        self.labels(labels[()][~skip], f"split {name!r}", count)
        self.finite_rows(embedding, f"split {name!r}", skip)


def _check_identity(path: Path, attrs: dict[str, Any], model: str | None, pretrained: str | None) -> None:
    if model is not None and attrs["model"] != model:
        raise ClipBridgeError(f"{path}: cache holds model {attrs['model']!r}, not the {model!r} asked for")
    if pretrained is not None:
        check_weights(path, attrs, str(pretrained))


def open_cache(path: str | Path, *, model: str | None = None, pretrained: str | None = None) -> Cache:
    """Open and validate a finished cache; `model`/`pretrained`, when given, must be what it holds."""
    path = Path(path)
    if not path.is_file():
        if tmp_path(path).exists():
            raise ClipBridgeError(f"{path}: the cache is incomplete (only {tmp_path(path).name} exists; "
                                  "run extract again to resume it)")
        raise ClipBridgeError(f"{path}: no such cache file")
    try:
        handle = open_hdf5(path, "r")
    except OSError as error:
        text = str(error)
        problem = "not an HDF5 file" if "signature" in text else f"cannot be opened as HDF5 ({text})"
        raise ClipBridgeError(f"{path}: {problem}; if it is a damaged cache, {rebuild_hint(path, None)}") from None
    with handle:
        check = _Validator(path, handle)
        with damage_guard(path, check.where, check.root_attrs):
            try:
                return _validated(path, handle, check, model, pretrained)
            except DamagedCacheError:
                raise
            except ClipBridgeError:
                if check.checked:   # a refusal of damaged values is a damaged cache: say so, naming the dataset
                    verify_rest(path, handle, set(), check.root_attrs, check.where)
                raise


def _validated(path: Path, handle: h5py.File, check: "_Validator", model: str | None,
               pretrained: str | None) -> Cache:
    """open_cache's checks of the open file (every dataset's checksum last, on a cache that has them)."""
    attrs = check.attrs()
    _check_identity(path, attrs, model, pretrained)
    projection, scale = check.model()
    names, original = check.classes()
    text_sets = list(handle["text"].keys()) if "text" in handle else []
    layout = (_LayoutV1 if attrs["version"] == 1 else _LayoutV2)(handle)
    if not text_sets:
        check.fail("holds no text set")
    if not layout.splits:
        check.fail("holds no image split")
    if projection is not None:
        width, dim = projection.shape
    else:
        width, dim = None, check.dataset(f"{text_group(text_sets[0])}/projected", 2).shape[1]
    bias, logit_bias = check.biases(dim)
    head = text_head_attrs(handle)
    for name in text_sets:
        check.text_set(name, width, dim, len(names))
    for name in layout.splits:
        (check.split_v1 if attrs["version"] == 1 else check.split_v2)(name, dim, len(names))
    if check.checked:
        check.where[0] = ""
        verify_rest(path, handle, check.verified, attrs, check.where)
    return Cache(path, attrs, names, original, projection, scale, text_sets, layout, bias, logit_bias, head)
