"""The paper recipes, as data: {method: rows}, one module per method beside this one (rows keyed by
"default", a dataset or "dataset@shots"; fields in common.py)."""
from __future__ import annotations

from clipbridge.bridge.recipes import (ape, ape_t, clip_adapter, cmm, gda, linear_probe, semobridge, semobridge_t,
                                       tip_adapter, tip_adapter_f, zeroshot)

RECIPES: dict[str, dict[str, dict]] = {
    "zeroshot": zeroshot.ROWS,
    "tip-adapter": tip_adapter.ROWS,
    "tip-adapter-f": tip_adapter_f.ROWS,
    "ape": ape.ROWS,
    "ape-t": ape_t.ROWS,
    "clip-adapter": clip_adapter.ROWS,
    "gda": gda.ROWS,
    "linear-probe": linear_probe.ROWS,
    "semobridge": semobridge.ROWS,
    "semobridge-t": semobridge_t.ROWS,
    "cmm": cmm.ROWS,
}
