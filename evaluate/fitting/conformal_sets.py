"""Conformal prediction sets for a fitted run: which labelled images calibrate them, and the threshold.

The guarantee (bridge.conformal) needs calibration images the fit never looked at, exchangeable with the
images to classify. The data the method (and its temperature) was selected on is therefore never used:

- protocol clean, with a val split: the val split's images beyond the seed's validation draw (CoOp draws
  min(K, 4) per class for selection; every other val image is held out);
- protocol clean, without a val split: the train images outside the seed's support set and its validation
  draw;
- protocol paper: the whole val split was the selection data, so the train images outside the seed's
  support set are used (the val split is not held out).

Only images the cache holds count. A cache extracted with --shots/--seeds --protocols clean holds only the val
images some seed's draw picked: for one seed the others' draws are then its held-out images (fewer, and balanced over
classes, so the guarantee assumes the test classes are too); with too few the error says how many there are
and how many the level needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clipbridge.bridge.conformal import (MODES, SCORES, check_alpha, classwise_thresholds, conformal_threshold,
                                         prediction_sets, true_class_scores)
from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.registry import FittedState, get_method
from clipbridge.cache.fewshot import draw_fewshot
from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.fitting.calibrate import RunCalibration

DEFAULT_SCORE = "lac"
DEFAULT_MODE = "marginal"


@dataclass(frozen=True)
class Holdout:
    """Labelled calibration images of one seed: plain views [n, D], labels [n] and where they come from."""

    queries: Tensor
    labels: Tensor
    source: str


@dataclass(frozen=True)
class ConformalThreshold:
    """What decides one seed's sets: threshold (a float, or [C] classwise), score, mode, coverage asked,
    calibration images used and their source."""

    threshold: float | Tensor
    score: str
    mode: str
    coverage: float
    images: int
    source: str

    def sets(self, probabilities: Tensor) -> Tensor:
        """[N, C] bool prediction sets of probabilities [N, C]."""
        return prediction_sets(probabilities, self.threshold, self.score)

    def describe(self) -> str:
        return (f"coverage {self.coverage:g} ({self.score.upper()} score, {self.mode}), calibrated on "
                f"{self.images} held-out image(s): {self.source}")


def check_conformal(coverage: float, score: str, mode: str) -> None:
    """One line for a coverage outside (0, 1), an unknown score or mode (before any work)."""
    try:
        check_alpha(1 - coverage)
    except BridgeInputError:
        raise ClipBridgeError(f"--coverage must be between 0 and 1 (e.g. 0.9), got {coverage}") from None
    if score not in SCORES:
        raise ClipBridgeError(f"unknown conformal score {score!r}; use one of {', '.join(SCORES)}")
    if mode not in MODES:
        raise ClipBridgeError(f"unknown conformal mode {mode!r}; use one of {', '.join(MODES)}")


def holdout(cache, meta: dict[str, Any], seed: int) -> Holdout:
    """The calibration images of `seed` for a run with `meta` (its protocol and shots), from `cache`."""
    train_list = cache.list_labels("train").tolist()
    has_val = "val" in cache.splits
    draw = draw_fewshot(train_list, cache.list_labels("val").tolist() if has_val else None, int(meta["shots"]),
                        int(seed))
    if meta["protocol"] == "clean" and has_val:
        split, excluded = "val", set(draw.val)
        source = "the val split's images outside the seed's validation draw"
    elif meta["protocol"] == "clean":
        split, excluded = "train", set(draw.support) | set(draw.val)
        source = "the train images outside the seed's support set and validation draw (no val split)"
    else:
        split, excluded = "train", set(draw.support)
        source = "the train images outside the seed's support set (protocol paper selects on the whole val split)"
    rows = cache.rows(split)
    keep = np.flatnonzero(~rows.skipped & ~np.isin(rows.source, np.fromiter(excluded, np.int64, len(excluded))))
    if keep.size == 0:
        return Holdout(torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), source)
    queries = cache.views(split, "plain", keep)[:, 0]
    return Holdout(queries, torch.from_numpy(rows.labels[keep]).long(), source)


def fit_threshold(state: FittedState, seed_index: int, data: Holdout, calibration: RunCalibration,
                  coverage: float, score: str = DEFAULT_SCORE, mode: str = DEFAULT_MODE,
                  classnames: list[str] | None = None) -> ConformalThreshold:
    """The conformal threshold of one seed from its held-out images (a one-line error when they are too few
    for the coverage asked)."""
    check_conformal(coverage, score, mode)
    alpha = 1 - coverage
    n = int(data.labels.numel())
    try:
        if n == 0:
            conformal_threshold(torch.zeros(0), alpha)                 # the refusal, with the count needed
        with torch.no_grad():
            logits = get_method(state.method).logits(state, data.queries.to(_device(state), torch.float32))
        probabilities = calibration.probabilities(logits[seed_index], seed_index)
        scores = true_class_scores(probabilities, data.labels, score)
        if mode == "classwise":
            threshold = classwise_thresholds(scores.cpu(), data.labels, probabilities.shape[-1], alpha, classnames)
        else:
            threshold = conformal_threshold(scores, alpha)
    except BridgeInputError as error:
        raise ClipBridgeError(f"{error} (held out: {data.source}; a cache extracted with --shots/--seeds "
                              "--protocols clean holds only the sampled val images: extract with --protocols "
                              "clean,paper, or ask a lower --coverage)") from None
    return ConformalThreshold(threshold, score, mode, coverage, n, data.source)


def _device(state: FittedState) -> torch.device:
    return next(iter(state.tensors.values())).device if state.tensors else torch.device("cpu")


def score_coverage(state: FittedState, cache, meta: dict[str, Any], queries: Tensor, labels: Tensor,
                   calibration: RunCalibration, coverage: float, score: str = DEFAULT_SCORE,
                   mode: str = DEFAULT_MODE) -> list[dict[str, Any]]:
    """Per seed, the test split's empirical coverage and mean set size (queries [N, D], labels [N]) of the
    sets calibrated on that seed's held-out images: {"coverage_level", "coverage", "mean_set_size",
    "conformal_score", "conformal_mode", "conformal_images", "conformal_source"}."""
    out = []
    with torch.no_grad():
        logits = get_method(state.method).logits(state, queries)                         # [S, N, C]
    for s, seed in enumerate(meta["seeds"]):
        chosen = fit_threshold(state, s, holdout(cache, meta, seed), calibration, coverage, score, mode,
                               list(meta.get("classnames") or []) or None)
        sets = chosen.sets(calibration.probabilities(logits[s], s))
        covered = sets.gather(1, labels.long().to(sets.device)[:, None])[:, 0]
        out.append({"coverage_level": coverage, "coverage": float(covered.double().mean()),
                    "mean_set_size": float(sets.sum(1).double().mean()), "conformal_score": score,
                    "conformal_mode": mode, "conformal_images": chosen.images, "conformal_source": chosen.source})
    return out
