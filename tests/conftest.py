"""Shared fixtures. Tests that read ../shared skip cleanly when it is absent (a user's clone has none)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the repository (docs, golden fixtures, real data), or skip."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (only the project's own tests run)")
    return SHARED


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op thread for every test: the tensors here are small, and on a busy 2-core machine two
    OpenMP threads make such tests up to ten times slower (spin-waits). Restored at the end."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
