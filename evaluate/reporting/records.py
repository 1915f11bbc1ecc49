"""Result records: one JSON object per line in results/results.jsonl, safe for concurrent writers.

A record is one (dataset, eval_dataset, model, method, shots, seed, ...) result. Appends take an
exclusive `fcntl.flock` on the results file itself (no lock file is left beside it), write whole lines,
flush and fsync, so several processes (bench ranks, parallel fits) can share one file. Reading skips a malformed line with a warning naming
`file:line` and keeps every other record.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

from clipbridge.bridge.recipes import UNIFORM
from clipbridge.errors import ClipBridgeError

RESULTS_FILE = "results.jsonl"

# Fields that identify a result: a record with the same key is the same work (bench skips it).
# `sweep` ({"name", "value"} of a bench sweep's point, evaluate/bench/sweep.py) is null outside sweeps, so records
# written before the field existed keep their key.
KEY_FIELDS = ("dataset", "eval_dataset", "model", "pretrained", "method", "shots", "seed", "recipe",
              "view_families", "prompt_sets", "protocol", "overrides", "sweep")

# Fields that vary between two runs of the same work (excluded when comparing runs).
VOLATILE_FIELDS = ("fit_seconds", "search_seconds", "time", "device", "package_version", "seeds_batched")


def package_version() -> str:
    """The installed clipbridge version ("unknown" when run from a tree that is not installed)."""
    try:
        return metadata.version("clipbridge")
    except metadata.PackageNotFoundError:
        return "unknown"


def make_record(*, dataset: str, model: str, pretrained: str, method: str, hparams: dict[str, Any],
                shots: int, seed: int, views: int, view_families: list[str], prompt_sets: list[str], protocol: str,
                val_accuracy: float, test_accuracy: float, fit_seconds: float, search_seconds: float,
                device: str, cache_id: str, val_is_test: bool, eval_dataset: str | None = None,
                overrides: dict[str, Any] | None = None, dtype: str = "float32",
                recipe: str = UNIFORM) -> dict[str, Any]:
    """One result as a JSON-able dict (accuracies in percent, seconds as floats)."""
    return {
        "dataset": dataset,
        "eval_dataset": eval_dataset or dataset,
        "model": model,
        "pretrained": pretrained,
        "method": method,
        "shots": int(shots),
        "seed": int(seed),
        "views": int(views),
        "view_families": list(view_families),
        "prompt_sets": list(prompt_sets),
        "protocol": protocol,
        "recipe": recipe,
        "overrides": dict(overrides or {}),
        "sweep": None,                      # {"name", "value"} in a sweep's records (evaluate/bench/grid.py)
        "hparams": _jsonable(hparams),
        "val_accuracy": float(val_accuracy),
        "test_accuracy": float(test_accuracy),
        "val_is_test": bool(val_is_test),
        "fit_seconds": float(fit_seconds),
        "search_seconds": float(search_seconds),
        "device": device,
        "dtype": dtype,
        "cache_id": cache_id,
        "package_version": package_version(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


#: calibration metrics a record may carry: `name` of the reported (calibrated) probabilities, `name_raw` of the
#: softmax of the method's logits (evaluate.fitting.calibrate.CalibrationScores)
CALIBRATION_METRICS = ("ece", "nll", "brier", "confidence")


def calibration_fields(stored: dict[str, Any] | None, seed_index: int, measured: dict[str, Any] | None = None,
                       coverage: dict[str, Any] | None = None) -> dict[str, Any]:
    """A record's calibration fields for one seed: "calibration" (temperature | none) and "temperature" from
    the state's info["calibration"] (None: a run fitted before calibration existed, "none"); with `measured`
    ({"raw", "calibrated"} metrics of the test split) ece/nll/brier/confidence of the reported probabilities
    and the same with suffix _raw (before calibration), and the reliability bins of both; with `coverage`
    the conformal fields (coverage_level, coverage, mean_set_size, conformal_*) as they are."""
    stored = stored or {"method": "none", "temperature": []}
    temperatures = stored.get("temperature") or []
    fields: dict[str, Any] = {
        "calibration": stored.get("method", "none"),
        "temperature": float(temperatures[seed_index]) if seed_index < len(temperatures) else 1.0}
    if measured:
        for name in CALIBRATION_METRICS:
            fields[name] = float(measured["calibrated"][name])
            fields[f"{name}_raw"] = float(measured["raw"][name])
        fields["reliability"] = measured["calibrated"]["bins"]
        fields["reliability_raw"] = measured["raw"]["bins"]
    if coverage:
        fields.update(coverage)
    return fields


def record_key(record: dict[str, Any]) -> str:
    """A canonical string for the work a record stands for (missing key fields count as null)."""
    return json.dumps([record.get(name) for name in KEY_FIELDS], sort_keys=True, separators=(",", ":"))


def results_path(results_dir: str | os.PathLike) -> Path:
    return Path(results_dir) / RESULTS_FILE


def writable_dir(folder: str | os.PathLike, what: str) -> Path:
    """Check, before any long work starts, that files can be written in `folder` (creating it if needed);
    a ClipBridgeError naming `what` and the folder otherwise. Folders this check creates are removed
    again, so a run that fails later leaves nothing behind."""
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ClipBridgeError(f"{what} folder {folder} is not writable ({error.strerror or error})") from None
    finally:
        for created in missing:  # deepest first
            with contextlib.suppress(OSError):
                created.rmdir()
    return folder


@contextmanager
def locked(handle, *, shared: bool = False) -> Iterator[None]:
    """Hold an advisory flock on an open file: exclusive to write, shared to read."""
    fcntl.flock(handle.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def append_records(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> int:
    """Append records as whole lines under the lock; returns how many were written.

    A previous writer killed mid-line leaves a line without a newline: a newline is added first so the
    new records stay readable (the broken line is then skipped by `read_records`).
    """
    path = Path(path)
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    if not lines:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle, locked(handle):
        _append_lines(handle, path, lines)
    return lines.count("\n")


def _append_lines(handle, path: Path, text: str) -> None:
    """Write whole lines `text` at the end of `path`'s locked `handle`, flushed to disk; a previous writer killed
    mid-line left a line without a newline: one is added first so the new lines stay readable."""
    handle.seek(0, os.SEEK_END)
    if handle.tell() > 0 and _last_byte(path) != b"\n":
        text = "\n" + text
    handle.write(text.encode("utf-8"))
    handle.flush()
    os.fsync(handle.fileno())


def append_new_records(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> tuple[int, int]:
    """Append only the records whose result the file does not already hold, under the lock; (written,
    unchanged). A record is unchanged when the file's latest record of its key (record_key) equals it in every
    field but the volatile ones (VOLATILE_FIELDS: timings, time, device, version): re-evaluating a run
    leaves one record per result; a different result is appended and, being the latest of its key, replaces
    the earlier one in every table (latest_by_key)."""
    path = Path(path)
    records = list(records)
    if not records:
        return 0, 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle, locked(handle):
        handle.seek(0)
        held = latest_by_key(_parse_lines(path, handle.read().splitlines()))
        fresh = [r for r in records if _stable(held.get(record_key(r))) != _stable(r)]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in fresh)
        if text:
            _append_lines(handle, path, text)
    return len(fresh), len(records) - len(fresh)


def _stable(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A record without its volatile fields (None stays None)."""
    if record is None:
        return None
    return {key: value for key, value in json.loads(json.dumps(record, sort_keys=True)).items()
            if key not in VOLATILE_FIELDS}


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every well-formed record of the file (none if it is absent); malformed lines warn and are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, "rb") as handle, locked(handle, shared=True):   # no half-appended line from a writer
        lines = handle.read().splitlines()
    return _parse_lines(path, lines)


def _parse_lines(path: Path, lines: list[bytes]) -> list[dict[str, Any]]:
    """The well-formed records of a file's lines; a malformed line warns with `file:line` and is skipped."""
    records = []
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            record = json.loads(text.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as error:
            warnings.warn(f"{path}:{number}: malformed result record skipped ({error})", stacklevel=3)
            continue
        records.append(record)
    return records


def latest_by_key(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record of each key (a re-run of the same work replaces the earlier result)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        latest[record_key(record)] = record
    return latest


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


def _jsonable(value: Any) -> Any:
    """Plain JSON values: tensors/numpy scalars to Python numbers, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return value
