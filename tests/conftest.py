"""Shared fixtures: where the offline data lives, and small model keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """``../shared/data`` beside the checkout, or ``$PROFL_DATA_DIR``."""
    return Path(os.environ.get("PROFL_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data()
    if not (path / "FashionMNIST").is_dir():
        pytest.skip(f"offline data not found at {path}")
    return path


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deploy: starts a real SuperLink and SuperNodes")
    config.addinivalue_line("markers", "simulation: runs a real Flower simulation")
