"""Calibrated probabilities for a fitted run: the temperature learnt at fit time, read back at use time, and
the test split's calibration metrics before and after it.

At fit time (evaluate.fitting.scoring.fit_method) each seed's temperature is fitted by minimising the NLL
of the method's logits, against Platt's smoothed targets, on the task's validation queries
(bridge.calibration), the very data the method's own selection used (clean: the min(K, 4)-per-class
validation draw; paper: the whole val split). It is stored in the state's info:

    state.info["calibration"] = {"method": "temperature" | "none", "temperature": [S floats, 1.0 for none],
                                 "fitted_on": "<which data, in words>", "val_nll": [S], "val_nll_raw": [S]}

and calibrated probabilities are softmax(logits / temperature[seed index]). A run saved before this key
existed loads as uncalibrated (`run_calibration` says so).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from clipbridge.bridge.calibration import calibrated_probabilities, fit_temperature
from clipbridge.bridge.calibration_metrics import CalibrationTally
from clipbridge.bridge.registry import FittedState, get_method
from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.fitting.choices import CALIBRATIONS

DEFAULT_CALIBRATION = "temperature"
FITTED_ON = {
    "val": "the validation draw (min(K, 4) images per class of the val split, seed by seed), the data the "
           "method's selection used",
    "train-heldout": "the validation draw (min(K, 4) images per class of the train images outside the support "
                     "set; the dataset has no val split), the data the method's selection used",
    "val-full": "the whole val split (protocol paper), the data the method's selection used",
    "test": "the test split standing in for a missing val split (protocol paper: val = test)",
}
UNFITTED = "nothing (no calibration)"


def check_calibration(kind: str) -> str:
    if kind not in CALIBRATIONS:
        raise ClipBridgeError(f"unknown calibration {kind!r}; use one of {', '.join(CALIBRATIONS)}")
    return kind


def validation_logits(state: FittedState, task) -> tuple[Tensor, Tensor]:
    """The method's logits [S, Nv, C] on the task's validation queries and their labels [S or 1, Nv]."""
    val = task.val[0] if task.val.shape[0] == 1 else task.val
    return get_method(state.method).logits(state, val), task.val_labels


def fit_calibration(state: FittedState, task, kind: str = DEFAULT_CALIBRATION,
                    val_source: str | None = None) -> dict[str, Any]:
    """state.info["calibration"] for `kind`: temperatures per seed fitted on the task's validation queries,
    whose origin `val_source` (the task meta's, evaluate.fitting.tasks) "fitted_on" states in words."""
    check_calibration(kind)
    if kind == "none":
        return {"method": "none", "temperature": [1.0] * task.num_seeds, "fitted_on": UNFITTED}
    with torch.no_grad():
        logits, labels = validation_logits(state, task)
        temperature = fit_temperature(logits, labels)
        nll = [_val_nll(logits, labels, t) for t in (torch.ones_like(temperature), temperature)]
    return {"method": "temperature", "temperature": [float(t) for t in temperature],
            "fitted_on": FITTED_ON.get(val_source or "", "the task's validation queries, the data the method's "
                                                           "selection used"),
            "val_nll_raw": nll[0], "val_nll": nll[1]}


def _val_nll(logits: Tensor, labels: Tensor, temperature: Tensor) -> list[float]:
    probabilities = calibrated_probabilities(logits, temperature)
    labels = labels.to(logits.device).long().expand(logits.shape[0], -1)
    mask = labels >= 0
    true = probabilities.gather(-1, labels.clamp_min(0)[..., None])[..., 0].clamp_min(1e-12)
    return ((-true.log() * mask).sum(1) / mask.sum(1)).tolist()


@dataclass(frozen=True)
class RunCalibration:
    """What turns a run's logits into its reported probabilities: method ("temperature" | "none"),
    temperature [S] and a note (why it is "none", where it was fitted)."""

    method: str
    temperature: list[float]
    note: str

    def probabilities(self, logits: Tensor, seed_index: int) -> Tensor:
        """softmax(logits / T[seed]) float64 of one seed's logits [N, C]."""
        return calibrated_probabilities(logits, self.temperature[seed_index])

    def label(self, seed_index: int) -> str:
        """'temperature 0.0412' or 'none': what each probability of that seed carries."""
        return f"temperature {self.temperature[seed_index]:.6g}" if self.method == "temperature" else "none"


def run_calibration(state: FittedState, num_seeds: int, asked: str | None = None) -> RunCalibration:
    """The calibration a fitted state's probabilities use: its stored one, or none when `asked` is "none";
    a run saved before calibration existed is uncalibrated (the note says so); asking "temperature" of a run
    fitted without one is a one-line error."""
    if asked is not None:
        check_calibration(asked)
    stored = state.info.get("calibration")
    if asked == "none" or (stored is None and asked is None):
        note = ("uncalibrated: the run was saved before clipbridge fitted a temperature (fit it again to "
                "calibrate)" if stored is None and asked is None else "uncalibrated (--calibration none)")
        return RunCalibration("none", [1.0] * num_seeds, note)
    if stored is None or stored.get("method") != "temperature":
        if asked == "temperature":
            raise ClipBridgeError("this run has no fitted temperature (it was fitted with --calibration none, or "
                                  "before clipbridge calibrated); fit it again or pass --calibration none")
        return RunCalibration("none", [1.0] * num_seeds, "uncalibrated: the run was fitted with --calibration none")
    temperature = [float(t) for t in stored["temperature"]]
    if len(temperature) != num_seeds:
        raise ClipBridgeError(f"the run's calibration holds {len(temperature)} temperature(s) for {num_seeds} seeds")
    return RunCalibration("temperature", temperature, f"temperature fitted on {stored.get('fitted_on', '?')}")


class CalibrationScores:
    """The test split's calibration metrics per seed (bridge.calibration_metrics), accumulated over chunks of
    the method's logits: {"raw": softmax of the logits, "calibrated": with the run's `calibration`}."""

    def __init__(self, calibration: RunCalibration) -> None:
        self.calibration = calibration
        self.tallies: list[dict[str, CalibrationTally]] | None = None

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Add one chunk: logits [S, n, C] (restricted to the scored classes), labels [n]."""
        if self.tallies is None:
            self.tallies = [{"raw": CalibrationTally(logits.shape[-1]), "calibrated": CalibrationTally(logits.shape[-1])}
                            for _ in range(logits.shape[0])]
        for s, tally in enumerate(self.tallies):
            tally["raw"].update(torch.softmax(logits[s].double(), -1), labels)
            tally["calibrated"].update(self.calibration.probabilities(logits[s], s), labels)

    def results(self) -> list[dict[str, Any]]:
        """Per seed {"raw": metrics, "calibrated": metrics}."""
        if self.tallies is None:
            raise ClipBridgeError("the test split is empty")
        return [{name: t.result() for name, t in tally.items()} for tally in self.tallies]
