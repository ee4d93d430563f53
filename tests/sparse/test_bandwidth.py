"""The median k-th-neighbour distance against a scipy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from kernelens.sparse import median_neighbor_distance


def test_matches_scipy_on_all_points():
    g = np.random.default_rng(0)
    P = g.normal(size=(300, 4))
    D = np.sort(cdist(P, P), axis=1)  # column 0 is the point itself
    for k in (1, 5, 20):
        got = median_neighbor_distance(torch.from_numpy(P), k, max_queries=300)
        assert got == pytest.approx(float(np.median(D[:, k])), rel=1e-10)


def test_subsample_is_close_and_deterministic():
    P = torch.randn(3000, 3, dtype=torch.float64)
    full = median_neighbor_distance(P, 10, max_queries=3000)
    sub = median_neighbor_distance(P, 10, max_queries=500, seed=1)
    assert sub == pytest.approx(full, rel=0.1)
    assert sub == median_neighbor_distance(P, 10, max_queries=500, seed=1)


def test_bad_input():
    P = torch.randn(10, 2)
    with pytest.raises(ValueError, match="k=10 needs at least k \\+ 1 = 11 points"):
        median_neighbor_distance(P, 10)
    with pytest.raises(ValueError, match="exact duplicates"):
        median_neighbor_distance(torch.zeros(20, 2), 3)
