"""Checking hyper-parameter values before any work: type from the method's default, range and choices from
rules (common names here, method-specific ones on the method's `rules`).

    check_values(method, {"steps": "abc"})  ->  BridgeInputError: semobridge-t: steps must be an integer, got 'abc'

Defaults decide the type: bool -> bool; int -> integer (an integral float such as 1e3 is accepted); float
-> finite number; str -> one of its declared choices; list -> list of finite numbers of the same length.
Numbers are >= 0 unless a rule says otherwise, and a `<name>_low` may not exceed its `<name>_high`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from clipbridge.bridge.errors import BridgeInputError


@dataclass(frozen=True)
class Range:
    """low <= value <= high (low excluded when open_low)."""

    low: float = 0.0
    high: float = math.inf
    open_low: bool = False

    def holds(self, value: float) -> bool:
        return (value > self.low if self.open_low else value >= self.low) and value <= self.high

    def describe(self) -> str:
        low = f"> {self.low:g}" if self.open_low else f">= {self.low:g}"
        return low if math.isinf(self.high) else f"{low} and <= {self.high:g}"


@dataclass(frozen=True)
class Items:
    """A list of numbers, each in `each`; any non-empty length (else the default's length)."""

    each: Range

    def describe(self) -> str:
        return f"a non-empty list of numbers {self.each.describe()}"


NON_NEGATIVE, POSITIVE, AT_LEAST_ONE = Range(), Range(open_low=True), Range(1)
FRACTION = Range(0.0, 1.0)

#: Which trained epoch (or step) a trained baseline keeps (bridge.training.train_and_select; records name it):
#: the best on validation among the trained ones 1..E (the official loops), the same with the untrained
#: start ("epoch 0") as a candidate too, or the last.
SELECT_MODES = ("trained-epochs", "with-epoch-0", "last")

#: Rules of hyper-parameter names shared by several methods (a method's own `rules` take precedence).
COMMON_RULES: dict[str, Range | tuple[str, ...]] = {
    "lr": POSITIVE, "eps": POSITIVE, "search_rounds": AT_LEAST_ONE, "search_per_round": NON_NEGATIVE,
    "eval_every": AT_LEAST_ONE, "grid_alpha": AT_LEAST_ONE, "grid_beta": AT_LEAST_ONE, "grid_points": AT_LEAST_ONE,
    "alpha_points": AT_LEAST_ONE, "lambda_points": AT_LEAST_ONE, "lambda_low": POSITIVE, "lambda_high": POSITIVE,
    "select": SELECT_MODES, "schedule": ("constant", "cosine"), "selection": ("best-val", "last"),
    "init": ("zero", "text"),
}


def rules_of(method) -> dict[str, Range | tuple[str, ...]]:
    return {**COMMON_RULES, **getattr(method, "rules", {})}


def check_values(method, hparams: dict[str, Any]) -> dict[str, Any]:
    """The values of `hparams` checked against `method`'s defaults and rules; integral floats given for
    integer hyper-parameters come back as ints. A bad value is one BridgeInputError line."""
    rules = rules_of(method)
    checked = {}
    for name, value in hparams.items():
        checked[name] = _check(method.name, name, value, method.defaults[name], rules.get(name))
    merged = {**method.defaults, **checked}
    for name, value in merged.items():
        if name.endswith("_low") and f"{name[:-4]}_high" in merged and _is_number(value):
            high = merged[f"{name[:-4]}_high"]
            if _is_number(high) and value > high:
                raise BridgeInputError(f"{method.name}: {name} ({value:g}) must not exceed {name[:-4]}_high "
                                       f"({high:g})")
    return checked


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(method: str, name: str, value: Any, default: Any, rule) -> Any:
    where = f"{method}: {name}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise BridgeInputError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise BridgeInputError(f"{where} must be an integer, got {value!r}")
        return _in_range(where, value, rule)
    if isinstance(default, float):
        if not _is_number(value) or not math.isfinite(value):
            raise BridgeInputError(f"{where} must be a finite number, got {value!r}")
        return _in_range(where, value, rule)
    if isinstance(default, str):
        choices = rule if isinstance(rule, tuple) else None
        if not isinstance(value, str) or (choices is not None and value not in choices):
            allowed = f"one of {', '.join(choices)}" if choices else "a string"
            raise BridgeInputError(f"{where} must be {allowed}, got {value!r}")
        return value
    if isinstance(default, (list, tuple)):
        length_ok = bool(value) if isinstance(rule, Items) else len(value) == len(default) \
            if isinstance(value, (list, tuple)) else False
        if (not isinstance(value, (list, tuple)) or not length_ok
                or not all(_is_number(v) and math.isfinite(v) for v in value)):
            wanted = rule.describe() if isinstance(rule, Items) else f"a list of {len(default)} finite numbers"
            raise BridgeInputError(f"{where} must be {wanted}, got {value!r}")
        for item in value:
            _in_range(where, item, rule.each if isinstance(rule, Items) else rule)
        return list(value)
    return value


def _in_range(where: str, value: float, rule) -> float:
    rule = rule if isinstance(rule, Range) else NON_NEGATIVE
    if not rule.holds(value):
        raise BridgeInputError(f"{where} must be {rule.describe()}, got {value!r}")
    return value
