"""Parsing of the options every stage's commands share: integer lists with ranges, comma-separated names,
--hparam key=value items."""
from __future__ import annotations

import json
import re
from typing import Any, Sequence

from clipbridge.errors import ClipBridgeError

#: --protocol(s): "clean" validates on CoOp's few-shot draw of the val split; "paper" as the papers' code does
#: (the whole val split, or the test split when a dataset has no val: flagged val_is_test).
PROTOCOLS = ("clean", "paper")


def parse_int_list(text: str, what: str) -> list[int]:
    """'1-3,5' -> [1, 2, 3, 5] (order kept, duplicates dropped); an empty or malformed list is a
    ClipBridgeError (callers pass an empty option here, never read it as "not given")."""
    values: list[int] = []
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match or (match.group(2) is not None and int(match.group(2)) < int(match.group(1))):
            raise ClipBridgeError(f"{what} {text!r} is not a list of integers or ranges such as '1-3,5'")
        low = int(match.group(1))
        values += range(low, int(match.group(2) or low) + 1)
    return list(dict.fromkeys(values))


def parse_names(text: str | None) -> list[str] | None:
    """'a, b' -> ['a', 'b']; None or '' -> None."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return names or None


def parse_hparams(items: Sequence[str]) -> dict[str, Any]:
    """['k=v', ...] -> {k: JSON value of v, or v as a string when it is not JSON}."""
    hparams: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ClipBridgeError(f"--hparam {item!r} must look like key=value")
        try:
            hparams[key.strip()] = json.loads(value)
        except ValueError:
            hparams[key.strip()] = value
    return hparams
