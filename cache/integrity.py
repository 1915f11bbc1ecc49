"""Checksums of a cache's datasets, and the one-line refusal of a damaged cache.

Every dataset of a finished cache carries the attribute `checksum` = "crc32:<8 hex>", the CRC-32 of its
values in a fixed byte order (little-endian numbers; strings as length-prefixed UTF-8), and the root carries
`checksums` = "crc32". CacheWriter.finish() stamps them; open_cache() recomputes each while it reads the
file for validation, so one overwritten byte anywhere in the data is refused before any method sees it.
A cache written before checksums existed (no root `checksums`) is read as before, unchecked.

Why a stored CRC and not HDF5's fletcher32 filter: fletcher32 needs chunked storage, and the writer keeps
embeddings contiguous and allocated up front so that a kill -9 while rows are written never changes HDF5
metadata (writer.py); a stored CRC keeps that guarantee and costs one pass at finish (FIGURES.md,
"First day"). CRC-32 detects accidental damage (flipped, zeroed or overwritten bytes), not tampering.

Structural damage (zeroed blocks in HDF5's own metadata) surfaces in h5py as KeyError, OSError, ValueError
and the like; `damage_guard` turns those into the same one-line refusal, naming the object being read.
"""
from __future__ import annotations

import contextlib
import json
import zlib
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from clipbridge.errors import ClipBridgeError
from clipbridge.cache.schema import CHECKSUM_ATTR, CHECKSUMS_ROOT_ATTR as ROOT_ATTR

ALGORITHM = "crc32"
#: Rows read per block when a large dataset is checksummed on its own.
BLOCK_ROWS = 65536
#: What h5py raises on a file whose bytes were damaged (besides the errors of a missing object).
DAMAGE_ERRORS = (KeyError, OSError, ValueError, RuntimeError, TypeError, IndexError, UnicodeDecodeError,
                 AttributeError)


class DamagedCacheError(ClipBridgeError):
    """A cache whose stored bytes no longer match what was written (one line: file, dataset, how to rebuild)."""


def _canonical(values: Any, dtype: np.dtype) -> bytes:
    """The bytes a checksum covers: numbers little-endian in the stored dtype, strings as 8-byte
    little-endian length + UTF-8 each."""
    if h5py.check_string_dtype(dtype) is not None:
        items = np.asarray(values, dtype=object).reshape(-1)
        parts = []
        for item in items:
            data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
            parts.append(len(data).to_bytes(8, "little") + data)
        return b"".join(parts)
    array = np.ascontiguousarray(np.asarray(values, dtype=dtype))
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and not np.little_endian):
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.tobytes()


class RunningChecksum:
    """CRC-32 of a dataset read in blocks, in order: update(block) for each, then `value`."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype
        self.crc = 0

    def update(self, block: Any) -> None:
        self.crc = zlib.crc32(_canonical(block, self.dtype), self.crc)

    @property
    def value(self) -> str:
        return f"{ALGORITHM}:{self.crc:08x}"


def _blocks(dataset: h5py.Dataset) -> Iterator[Any]:
    """The dataset's values in row blocks (a scalar as one block); strings decoded to str."""
    reader = dataset.asstr() if h5py.check_string_dtype(dataset.dtype) is not None else dataset
    if dataset.ndim == 0:
        yield reader[()]
        return
    for start in range(0, dataset.shape[0], BLOCK_ROWS):
        yield reader[start:start + BLOCK_ROWS]


def dataset_checksum(dataset: h5py.Dataset) -> str:
    """"crc32:<8 hex>" of a whole dataset."""
    running = RunningChecksum(dataset.dtype)
    for block in _blocks(dataset):
        running.update(block)
    return running.value


def _datasets(handle: h5py.File) -> list[tuple[str, h5py.Dataset]]:
    found: list[tuple[str, h5py.Dataset]] = []
    handle.visititems(lambda name, obj: found.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
    return found


def stamp(handle: h5py.File) -> None:
    """Write the checksum attribute of every dataset and the root marker (the writer, at finish)."""
    for _, dataset in _datasets(handle):
        dataset.attrs[CHECKSUM_ATTR] = dataset_checksum(dataset)
    handle.attrs[ROOT_ATTR] = ALGORITHM
    handle.flush()


def has_checksums(handle: h5py.File) -> bool:
    """Whether the cache was written with checksums (older caches were not)."""
    value = handle.attrs.get(ROOT_ATTR)
    return (value.decode() if isinstance(value, bytes) else value) == ALGORITHM


def rebuild_hint(path: str | Path, attrs: dict[str, Any] | None) -> str:
    """How to rebuild a damaged cache: delete it, then the extract command that wrote it (from its recorded
    options and coverage when those are readable)."""
    from clipbridge.cache.coverage import Coverage, extract_hint

    command = ""
    try:
        attrs = attrs or {}
        args = json.loads(attrs["extract_args"]) if attrs.get("extract_args") else None
        coverage = Coverage.from_attr(json.loads(attrs["coverage"])) if attrs.get("coverage") else None
        if args:
            pairs = sorted(coverage.pairs) if coverage is not None and not coverage.is_everything else []
            command = extract_hint(args, path=path, shots=[k for k, _ in pairs] or None,
                                   seeds=[s for _, s in pairs] or None)
    except (ValueError, KeyError, TypeError, AttributeError):
        command = ""
    how = f"`{command}`" if command else "the extract command that wrote it"
    return f"delete it and rebuild it with {how} (an interrupted rebuild resumes)"


def damaged(path: str | Path, name: str, problem: str, attrs: dict[str, Any] | None = None) -> DamagedCacheError:
    """The one-line refusal: '<file>: damaged cache: /<dataset> <problem>; delete it and rebuild it with ...'."""
    where = f"/{name.lstrip('/')}" if name else "its HDF5 structure"
    return DamagedCacheError(f"{path}: damaged cache: {where} {problem}; {rebuild_hint(path, attrs)}")


def check_value(path: str | Path, dataset: h5py.Dataset, computed: str, attrs: dict[str, Any] | None) -> None:
    """Refuse a dataset whose recomputed checksum differs from the stored one (or that lost it)."""
    stored = dataset.attrs.get(CHECKSUM_ATTR)
    stored = stored.decode() if isinstance(stored, bytes) else stored
    if stored is None:
        raise damaged(path, dataset.name, "has lost its checksum", attrs)
    if stored != computed:
        raise damaged(path, dataset.name, f"does not match its checksum ({computed}, stored {stored})", attrs)


def verify_rest(path: str | Path, handle: h5py.File, verified: set[str], attrs: dict[str, Any] | None,
                where: list[str] | None = None) -> None:
    """Check every dataset not in `verified` (names as h5py gives them, '/a/b') against its checksum
    (`where` [1] follows the dataset being read, for damage_guard)."""
    where = where if where is not None else [""]
    for _, dataset in _datasets(handle):
        where[0] = dataset.name
        if dataset.name not in verified:
            check_value(path, dataset, dataset_checksum(dataset), attrs)


@contextlib.contextmanager
def damage_guard(path: str | Path, where: list[str], attrs: dict[str, Any] | None = None) -> Iterator[None]:
    """Turn h5py's errors on damaged bytes into DamagedCacheError; `where` [1] holds the object being read
    (updated by the caller as it goes)."""
    try:
        yield
    except ClipBridgeError:
        raise
    except DAMAGE_ERRORS as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise damaged(path, where[0] if where else "", f"cannot be read ({type(error).__name__}: {reason})",
                      attrs) from None
