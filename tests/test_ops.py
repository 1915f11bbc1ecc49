"""bridge.ops: flush_denormals (subnormal floats become zero for the rest of the process, own subprocess) and
all_finite (the inputs' NaN / Inf check)."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from conftest import REPO

PROGRAM = """
import torch
before = (torch.tensor([1e-40]) * 1.0).item()
from clipbridge.bridge.ops import flush_denormals
supported = flush_denormals()
after = (torch.tensor([1e-40]) * 1.0).item()
print(before, supported, after)
"""

# torch.set_flush_denormal works on x86 with SSE3 (every x86-64 CPU) and on AArch64 (its documentation).
FLUSHING_CPUS = ("x86_64", "AMD64", "aarch64", "arm64")


def test_flush_denormals_turns_subnormal_results_into_zero():
    if platform.machine() not in FLUSHING_CPUS:
        pytest.skip(f"torch cannot flush subnormals on a {platform.machine()} CPU")
    out = subprocess.run([sys.executable, "-c", PROGRAM], cwd=REPO, capture_output=True, text=True, check=True)
    before, supported, after = out.stdout.split()
    assert float(before) > 0                       # subnormals exist before the call (nothing flushed at import)
    assert supported == "True"
    assert float(after) == 0.0


def test_all_finite_finds_one_nan_or_infinity_anywhere_and_passes_finite_and_empty_tensors():
    from clipbridge.bridge.ops import all_finite

    x = torch.randn(3, 7, 5, dtype=torch.float32) * 1e30                    # large but finite
    assert all_finite(x) and all_finite(torch.empty(0, 4))
    for where in [(0, 0, 0), (2, 6, 4), (1, 3, 2)]:
        for bad in (float("nan"), float("inf"), -float("inf")):
            y = x.clone()
            y[where] = bad
            assert not all_finite(y), (where, bad)
    assert not all_finite(torch.tensor([float("nan"), float("inf")], dtype=torch.float64))
