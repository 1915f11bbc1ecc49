"""The one reading of a --device option, for every stage that runs tensors (extract's model, evaluate's fits)."""
from __future__ import annotations

import torch

from clipbridge.errors import ClipBridgeError


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available else cpu; 'cpu', 'cuda' or 'cuda:N' as given. A name torch does not know,
    or cuda on a machine without it, is a one-line ClipBridgeError naming --device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ClipBridgeError(f"unknown --device {name!r} (use auto, cpu, cuda or cuda:N)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ClipBridgeError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
    return device
