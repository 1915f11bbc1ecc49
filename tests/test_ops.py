"""bridge.ops.flush_denormals: subnormal floats become zero for the rest of the process (own subprocess)."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO

PROGRAM = """
import torch
before = (torch.tensor([1e-40]) * 1.0).item()
from clipbridge.bridge.ops import flush_denormals
supported = flush_denormals()
after = (torch.tensor([1e-40]) * 1.0).item()
print(before > 0, supported, after == 0.0 or not supported)
"""


def test_flush_denormals_turns_subnormal_results_into_zero():
    out = subprocess.run([sys.executable, "-c", PROGRAM], cwd=REPO, capture_output=True, text=True, check=True)
    before_positive, supported, flushed = out.stdout.split()
    assert before_positive == "True" and flushed == "True"
    assert supported in ("True", "False")
