"""Options the benchmark scripts (scale, paper_grid) share, checked before any cache is written."""
from __future__ import annotations

from typing import Sequence


def checked_device(name: str, precision: str | None = None, methods: Sequence[str] = ()) -> str:
    """The device's name (cpu, cuda:i) after refusing, in one line (SystemExit "error: ..."), a device this
    machine does not have or a `precision` (bridge.precision) one of `methods` cannot run on it."""
    from clipbridge.bridge.devices import resolve_device
    from clipbridge.bridge.errors import BridgeInputError
    from clipbridge.bridge.precision import resolve_precision
    from clipbridge.errors import ClipBridgeError

    try:
        device = resolve_device(name)
        for method in methods if precision else ():
            resolve_precision(precision, method, device)
    except (ClipBridgeError, BridgeInputError) as exc:
        raise SystemExit(f"error: {exc}") from None
    return str(device)
