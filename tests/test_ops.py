"""bridge.ops.flush_denormals: subnormal floats become zero for the rest of the process (own subprocess)."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

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
