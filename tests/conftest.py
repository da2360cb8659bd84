"""Shared fixtures: device/dtype options (zuko-style) and the location of ../shared/data.

A test that needs ``../shared/data`` uses the ``shared_data`` fixture: outside CI it is skipped
when the folder is missing; in CI (``CI=true``) it fails instead.
"""

from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads must not spin on a shared 2-core CI machine (5x slower otherwise);
# this has to be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SMEFT_PYHF_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device for the tests (cpu, cuda)")
    parser.addoption("--dtype", default="float64", choices=["float32", "float64"])


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.config.getoption("--device"))


@pytest.fixture(scope="session")
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return getattr(torch, request.config.getoption("--dtype"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; fails in CI when it is missing, skips elsewhere."""
    if not SHARED_DATA.is_dir():
        message = f"shared data folder {SHARED_DATA} is missing"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
