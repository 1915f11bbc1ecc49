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
