"""Saved runs: a FittedState plus what it was fitted on, under runs/<dataset>/<method>/<name>/.

A run directory holds `state.pt` (the state's tensors, CPU, torch.save) and `run.json` (method, hparams,
info, cache path and id, shots, seeds, view families, prompt sets, protocol, device, dtype, overrides). No cache
data is copied. The directory is written under a temporary name and renamed into place.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from clipbridge.bridge.registry import FittedState
from clipbridge.cache.coverage import format_ranges
from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.reporting.files import ordinary_mode

STATE_FILE = "state.pt"
META_FILE = "run.json"


def format_seeds(seeds: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3,5' (sorted runs of consecutive seeds)."""
    return format_ranges(seeds)


def run_dir_name(meta: dict[str, Any], method: str, overrides: dict[str, Any]) -> str:
    """shots<K>-seeds<...>-<hash of everything that defines the run>."""
    identity = {key: meta.get(key) for key in ("cache_id", "shots", "seeds", "view_families", "prompt_sets",
                                                "protocol", "dtype")}
    identity.update(method=method, overrides=overrides)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return f"shots{meta['shots']}-seeds{format_seeds(meta['seeds'])}-{digest}"


def save_run(root: str | os.PathLike, state: FittedState, meta: dict[str, Any],
             overrides: dict[str, Any] | None = None) -> Path:
    """Write the run atomically (a previous run of the same name is replaced); returns its directory."""
    overrides = dict(overrides or {})
    final = Path(root) / meta["dataset"] / state.method / run_dir_name(meta, state.method, overrides)
    final.parent.mkdir(parents=True, exist_ok=True)
    document = {"method": state.method, "hparams": state.hparams, "info": state.info,
                "overrides": overrides, "meta": meta, "state_tensors": _shapes(state.tensors)}
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        staging.chmod(ordinary_mode(folder=True))           # mkdtemp makes it private (0700); a run folder is ordinary
        torch.save({name: t.detach().cpu() for name, t in state.tensors.items()}, staging / STATE_FILE)
        (staging / META_FILE).write_text(json.dumps(document, indent=2, sort_keys=True, default=_plain))
        if final.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
            os.replace(final, retired / final.name)
            os.replace(staging, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def load_run(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[FittedState, dict, dict]:
    """(FittedState with tensors on `device`, meta, overrides) of a saved run directory."""
    path = Path(path)
    if not (path / META_FILE).is_file() or not (path / STATE_FILE).is_file():
        raise ClipBridgeError(f"{path} is not a saved run (expected {META_FILE} and {STATE_FILE} in it)")
    try:
        document = json.loads((path / META_FILE).read_text())
        tensors = torch.load(path / STATE_FILE, map_location=device, weights_only=True)
    except (OSError, ValueError, RuntimeError, EOFError) as error:
        raise ClipBridgeError(f"cannot read run {path}: {str(error).splitlines()[0] if str(error) else error!r}") \
            from None
    if not isinstance(tensors, dict) or not isinstance(document, dict) or "method" not in document:
        raise ClipBridgeError(f"cannot read run {path}: {META_FILE} or {STATE_FILE} is not what clipbridge wrote")
    expected = document.get("state_tensors")          # absent in runs saved before it was recorded
    if expected is not None and _shapes(tensors) != expected:
        raise ClipBridgeError(
            f"{path / STATE_FILE} does not belong to this run: {META_FILE} says {document['method']} with tensors "
            f"{', '.join(sorted(expected)) or 'none'}, the file holds {', '.join(sorted(tensors)) or 'none'}; "
            f"put the run's own {STATE_FILE} back or fit it again")
    state = FittedState(method=document["method"], tensors=tensors, hparams=document["hparams"],
                        info=document["info"])
    return state, document["meta"], document.get("overrides", {})


def _shapes(tensors: dict[str, Any]) -> dict[str, list[int]]:
    """{tensor name: shape} of a state, as run.json records it."""
    return {name: [int(n) for n in tensor.shape] for name, tensor in sorted(tensors.items())}


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
