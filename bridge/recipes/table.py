"""The recipe table: {method: rows}, one module per method beside this one (rows keyed by "default", a
dataset or "dataset@shots"; fields in common.py).

Its order is the methods' display order (tables, plots, `clipbridge methods`, help texts), and its keys are
the one list of methods that needs no torch: METHOD_NAMES. bridge.registry.REGISTRY holds the same methods
(tests/test_recipes.py checks it); a new method is its module in bridge/methods/ and its rows here.
"""
from __future__ import annotations

from typing import Iterable

from clipbridge.bridge.recipes import (ape, ape_t, clip_adapter, cmm, gda, linear_probe, semobridge, semobridge_t,
                                       tip_adapter, tip_adapter_f, zeroshot)

RECIPES: dict[str, dict[str, dict]] = {
    "zeroshot": zeroshot.ROWS,
    "linear-probe": linear_probe.ROWS,
    "clip-adapter": clip_adapter.ROWS,
    "tip-adapter": tip_adapter.ROWS,
    "tip-adapter-f": tip_adapter_f.ROWS,
    "ape": ape.ROWS,
    "ape-t": ape_t.ROWS,
    "gda": gda.ROWS,
    "cmm": cmm.ROWS,
    "semobridge": semobridge.ROWS,
    "semobridge-t": semobridge_t.ROWS,
}
#: every method, in display order
METHOD_NAMES = tuple(RECIPES)


def order_methods(names: Iterable[str]) -> list[str]:
    """`names` in display order (METHOD_NAMES), then any unknown ones alphabetically."""
    names = set(names)
    known = [m for m in METHOD_NAMES if m in names]
    return known + sorted(names - set(known))
