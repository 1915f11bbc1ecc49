"""The names the calibration and conformal options accept, importable without torch (the commands' --help
must not load it): evaluate.fitting.calibrate and bridge.conformal act on them (tests check they agree)."""
from __future__ import annotations

#: how probabilities are calibrated (evaluate.fitting.calibrate)
CALIBRATIONS = ("temperature", "none")
#: conformal nonconformity scores and modes (bridge.conformal.SCORES / MODES)
CONFORMAL_SCORES = ("lac", "aps")
CONFORMAL_MODES = ("marginal", "classwise")
