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


def pytest_addoption(parser):
    parser.addoption("--fake-cuda", action="store_true",
                     help="run every test as on a machine with one GPU, imitated on the CPU (tests/fake_cuda.py): "
                          "torch reports a CUDA device, so device 'auto' picks it")


@pytest.fixture(autouse=True)
def imitated_gpu(request):
    """With --fake-cuda: the test runs inside fake_cuda() (torch reports one CUDA device)."""
    if not request.config.getoption("--fake-cuda"):
        yield
        return
    from fake_cuda import fake_cuda

    with fake_cuda():
        yield
