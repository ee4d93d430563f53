"""Shared test fixtures: deterministic seeds and float64 helpers."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("KERNELENS_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - tests that use the legacy global RNG stay deterministic


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
