"""MetricFactor: M = S S^T in every representation, and mapped distances equal Mahalanobis ones."""

from __future__ import annotations

import torch

from kernelens.kernels import euclidean_distances
from kernelens.rfm._metric import MetricFactor


def _psd(d: int, rank: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(d, rank, generator=g, dtype=torch.float64)
    return B @ B.T


def test_full_factor_reproduces_M_and_drops_null_directions():
    M = _psd(7, 3)
    f = MetricFactor.from_matrix(M, diagonal=False, symmetric_root=False)
    assert f.rank == 3  # the four null directions are dropped
    torch.testing.assert_close(f.matrix(), M, rtol=1e-12, atol=1e-12)
    X = torch.randn(11, 7, dtype=torch.float64)
    Z = torch.randn(5, 7, dtype=torch.float64)
    U, V = f.apply(X), f.apply(Z)
    ref = euclidean_distances(X, Z, M=M)
    torch.testing.assert_close(torch.cdist(U, V), ref, rtol=1e-10, atol=1e-10)


def test_symmetric_root_is_the_square_root():
    M = _psd(6, 6, seed=1)
    f = MetricFactor.from_matrix(M, diagonal=False, symmetric_root=True)
    S = f.scale
    torch.testing.assert_close(S, S.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(S @ S, M, rtol=1e-10, atol=1e-10)


def test_diagonal_factor_keeps_positive_coordinates_only():
    M = torch.diag(torch.tensor([4.0, 0.0, 1.0, 0.0], dtype=torch.float64))
    f = MetricFactor.from_matrix(M, diagonal=True, symmetric_root=False)
    assert f.index.tolist() == [0, 2]
    X = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(f.apply(X), X[:, [0, 2]] * torch.tensor([2.0, 1.0]).double())
    torch.testing.assert_close(f.matrix(), M)
    G = torch.tensor([[1.0, 0.5], [0.5, 3.0]], dtype=torch.float64)
    full = f.pull_back(G)
    torch.testing.assert_close(f.pull_back_diagonal(G.diagonal()), full.diagonal())
    assert full[1].abs().sum() == 0 and full[:, 3].abs().sum() == 0


def test_identity_and_zero_metric():
    f = MetricFactor.identity(3, dtype=torch.float64)
    torch.testing.assert_close(f.matrix(), torch.eye(3, dtype=torch.float64))
    zero = MetricFactor.from_matrix(
        torch.zeros(3, 3, dtype=torch.float64), diagonal=False, symmetric_root=False
    )
    assert zero.rank == 0
    assert zero.apply(torch.ones(2, 3, dtype=torch.float64)).shape == (2, 0)
