"""Shared test fixtures: deterministic seeds and float64 helpers."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

os.environ.setdefault("KERNELENS_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """One BLAS / intra-op thread for the whole run: the tests use many small products, which
    two threads slow down (synchronisation), dramatically so on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - tests that use the legacy global RNG stay deterministic


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
