"""clipbridge: few-shot CLIP adaptation on an HDF5 embedding cache.

The installed package is this repository's root: `clipbridge.extract` (stage 1: open_clip -> cache),
`clipbridge.cache` (the HDF5 format), `clipbridge.bridge` (stage 2: pure-tensor methods),
`clipbridge.evaluate` (stage 3: scoring, records, tables, plots) and `clipbridge.cli` (the command line).

The Python API (evaluate/fitting/api.py), imported on first use so that `import clipbridge` stays instant:

    import clipbridge as cb
    cache = cb.open_cache("cache/ViT-B-16--openai/dtd.h5")
    run = cb.fit(cache, method="semobridge-t", shots=16, seeds=[1, 2, 3])
    records = run.evaluate()                  # test accuracy per seed
    run.save("runs")
    predictions = run.predict(["photo.jpg"], topk=5)
    cb.load_run("runs/dtd/semobridge-t/...")
"""
from __future__ import annotations

from typing import Any

__all__ = ["open_cache", "fit", "load_run", "Run", "Prediction", "METHODS"]

_LAZY = {
    "open_cache": ("clipbridge.cache.reader", "open_cache"),
    "fit": ("clipbridge.evaluate.fitting.api", "fit"),
    "load_run": ("clipbridge.evaluate.fitting.api", "load_run"),
    "Run": ("clipbridge.evaluate.fitting.api", "Run"),
    "Prediction": ("clipbridge.evaluate.fitting.predict", "Prediction"),
    "METHODS": ("clipbridge.bridge.recipes", "METHOD_NAMES"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'clipbridge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
