"""Fit a method on a task, score a fitted state on test queries, turn results into records.

Shared by `fit`, `evaluate` and `bench`; `test_records` is the one test score they record (accuracy and
calibration metrics). Scoring on another dataset (distribution shift) restricts the
source logits to the target's classes, matched by name.
"""
from __future__ import annotations

import re
import time
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

from clipbridge.bridge.recipes import UNIFORM
from clipbridge.bridge.ops import accuracy
from clipbridge.bridge.precision import products_in, resolve_precision
from clipbridge.bridge.registry import FittedState, get_method, require_inputs
from clipbridge.bridge.task import FewShotTask
from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.fitting.calibrate import (DEFAULT_CALIBRATION, CalibrationScores, fit_calibration,
                                                  run_calibration)
from clipbridge.evaluate.reporting.records import calibration_fields, make_record

QUERY_CHUNK = 4096


def fit_method(name: str, task: FewShotTask, overrides: dict[str, Any] | None = None,
               precision: str = "fp32", calibration: str = DEFAULT_CALIBRATION,
               val_source: str | None = None) -> FittedState:
    """REGISTRY[name].fit(task, **overrides) (the method checks its arguments, bridge.registry.check_hparams)
    with its matrix products at `precision` (bridge.precision: auto, fp32, bf16, tf32; info["precision"] says
    which ran); fills fit_seconds/search_seconds if the method did not; then fits the `calibration`
    ("temperature": one per seed on the task's validation queries, `val_source` naming them; "none") into
    info["calibration"] (evaluate.fitting.calibrate; not counted in fit_seconds). A task without an input the
    method reads (bridge.registry.require_inputs) is refused first, in one line."""
    method = get_method(name)
    require_inputs(method, task)
    chosen = resolve_precision(precision, name, task.support.device, task.support.dtype)
    start = time.perf_counter()
    with products_in(chosen):
        state = method.fit(task, **dict(overrides or {}))
    elapsed = time.perf_counter() - start
    state.info.update(chosen.record())
    state.info.setdefault("fit_seconds", elapsed)
    state.info.setdefault("search_seconds", 0.0)
    state.info.setdefault("val_accuracy", [float("nan")] * task.num_seeds)
    state.info["calibration"] = fit_calibration(state, task, calibration, val_source)
    return state


def test_logits(state: FittedState, queries: Tensor, labels: Tensor,
                class_map: Tensor | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """(logits [S, n, C], labels [n] on their device) of `state` on queries [N, D] with labels [N], chunk by
    chunk (QUERY_CHUNK queries) to bound memory. class_map [C'] (optional): source class index of each
    target class; logits are restricted to those columns so labels index the target's classes."""
    method = get_method(state.method)
    for start in range(0, queries.shape[0], QUERY_CHUNK):
        logits = method.logits(state, queries[start:start + QUERY_CHUNK])                   # [S, n, C]
        if class_map is not None:
            logits = logits[..., class_map.to(logits.device)]
        yield logits, labels[start:start + QUERY_CHUNK].to(logits.device)


class HitCount:
    """Top-1 accuracy (%) per seed, accumulated over chunks of logits [S, n, C] and labels [n]."""

    def __init__(self) -> None:
        self.hits: Tensor | None = None
        self.total = 0

    def update(self, logits: Tensor, labels: Tensor) -> None:
        correct = accuracy(logits, labels).double() * labels.shape[0] / 100.0
        self.hits = correct if self.hits is None else self.hits + correct
        self.total += labels.shape[0]

    def percent(self) -> list[float]:
        if self.hits is None:
            raise ClipBridgeError("the test split is empty")
        return (100.0 * self.hits / self.total).tolist()


def score_queries(state: FittedState, queries: Tensor, labels: Tensor,
                  class_map: Tensor | None = None) -> list[float]:
    """Top-1 accuracy (%) per seed of `state` on queries [N, D] with labels [N] (class_map as test_logits)."""
    hits = HitCount()
    for logits, target in test_logits(state, queries, labels, class_map):
        hits.update(logits, target)
    return hits.percent()


def _name_key(name: str) -> str:
    return re.sub(r"[\s_]+", " ", str(name)).strip().lower()


def align_classes(source, target) -> Tensor:
    """[C_target] int64: the source class index of each target class, matched by (original) class name.

    Raises ClipBridgeError naming the first target class the source does not have, or when the two
    caches come from different models.
    """
    for attr in ("model", "pretrained"):
        if str(source.attrs.get(attr)) != str(target.attrs.get(attr)):
            raise ClipBridgeError(f"cache {target.path} has {attr} {target.attrs.get(attr)!r}, but the "
                                  f"source cache {source.path} has {source.attrs.get(attr)!r}")
    lookup: dict[str, int] = {}
    for names in (source.original_classnames, source.classnames):
        for index, name in enumerate(names):
            lookup.setdefault(_name_key(name), index)
    mapping = []
    for name, original in zip(target.classnames, target.original_classnames):
        index = lookup.get(_name_key(original), lookup.get(_name_key(name)))
        if index is None:
            raise ClipBridgeError(f"class {name!r} of {target.path} is not a class of {source.path}")
        mapping.append(index)
    return torch.tensor(mapping, dtype=torch.long)


def seed_records(state: FittedState, meta: dict[str, Any], test_acc: Sequence[float], *,
                 overrides: dict[str, Any] | None = None, eval_dataset: str | None = None,
                 eval_cache_id: str | None = None, calibration: Sequence[dict[str, Any]] | None = None,
                 coverage: Sequence[dict[str, Any]] | None = None,
                 stored_calibration: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One record per seed of a fitted state (meta from evaluate.fitting.tasks.build_fit_task); calibration
    (evaluate.fitting.calibrate.CalibrationScores) and coverage (evaluate.fitting.conformal_sets.score_coverage)
    per seed, when measured, add their fields (evaluate.reporting.records.calibration_fields);
    stored_calibration ({"method", "temperature"}) is the calibration applied, default the state's."""
    info = state.info
    applied = stored_calibration if stored_calibration is not None else info.get("calibration")
    records = []
    for s, seed in enumerate(meta["seeds"]):
        record = make_record(
            dataset=meta["dataset"], model=meta["model"], pretrained=meta["pretrained"], method=state.method,
            hparams=state.hparams[s] if s < len(state.hparams) else {}, shots=meta["shots"], seed=seed,
            views=meta["views"], view_families=meta["view_families"], prompt_sets=meta["prompt_sets"],
            protocol=meta["protocol"],
            val_accuracy=info["val_accuracy"][s], test_accuracy=test_acc[s],
            fit_seconds=info["fit_seconds"], search_seconds=info["search_seconds"], device=meta["device"],
            cache_id=meta["cache_id"], val_is_test=meta["val_is_test"], eval_dataset=eval_dataset,
            overrides=overrides, dtype=meta["dtype"], recipe=meta.get("recipe", UNIFORM))
        record.update(precision=info.get("precision", "fp32"),
                      **({"bf16_kernel": info["bf16_kernel"]} if "bf16_kernel" in info else {}))
        record["seeds_batched"] = len(meta["seeds"])
        record["validation"] = meta.get("validation", "protocol")     # "sampled": min(K, 4) under any protocol
        if eval_cache_id:
            record["eval_cache_id"] = eval_cache_id
        record.update(calibration_fields(applied, s, calibration[s] if calibration else None,
                                         coverage[s] if coverage else None))
        records.append(record)
    return records


def test_records(state: FittedState, meta: dict[str, Any], queries: Tensor, labels: Tensor, *,
                 overrides: dict[str, Any] | None = None, class_map: Tensor | None = None,
                 calibration: str | None = None, eval_dataset: str | None = None, eval_cache_id: str | None = None,
                 coverage: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One record per seed of `state` scored on test queries [N, D] with labels [N]: top-1 accuracy and the
    calibration metrics before and after the state's calibration (or `calibration`: "temperature" | "none";
    evaluate.fitting.calibrate), coverage fields as given (seed_records)."""
    chosen = run_calibration(state, len(meta["seeds"]), calibration)
    hits, metrics = HitCount(), CalibrationScores(chosen)
    with torch.no_grad():
        for logits, target in test_logits(state, queries, labels, class_map):   # one pass: both scores
            hits.update(logits, target)
            metrics.update(logits, target)
    return seed_records(state, meta, hits.percent(), overrides=overrides, eval_dataset=eval_dataset,
                        eval_cache_id=eval_cache_id, calibration=metrics.results(), coverage=coverage,
                        stored_calibration={"method": chosen.method, "temperature": chosen.temperature})
