"""--device for every command: 'auto', or a device this machine has, refused in one line otherwise.

resolve_device('tpu') used to end in torch's RuntimeError traceback; now every unknown or absent device is
refused with the list of devices this machine has (cpu, then cuda, cuda:0 ... when GPUs are visible, mps
on Apple silicon).
"""
from __future__ import annotations

import torch

from clipbridge.bridge.errors import BridgeInputError


def available_devices() -> list[str]:
    """The devices this machine has, as --device accepts them: ['auto', 'cpu', 'cuda', 'cuda:0', ...]."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def resolve_device(name: str | torch.device, option: str = "--device") -> torch.device:
    """'auto' -> cuda when available else cpu; any other name must be one of available_devices()."""
    if isinstance(name, torch.device):
        name = str(name)
    text = str(name).strip()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    known = available_devices()
    if text not in known:
        raise BridgeInputError(f"{option} {text!r}: this machine has {', '.join(known)}")
    return torch.device(text)
