"""Random test matrices for the linalg tests (float64 numpy-free constructions in torch)."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_limits


def spd_matrix(
    n: int,
    eigenvalues: torch.Tensor | None = None,
    *,
    cond: float = 1e3,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> torch.Tensor:
    """``Q diag(eigenvalues) Q^T`` with a Haar-random ``Q`` (log-spaced in [1/cond, 1] by
    default), built in float64 and cast to ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    if eigenvalues is None:
        eigenvalues = torch.logspace(
            0, -torch.log10(torch.tensor(cond)).item(), n, dtype=torch.float64
        )
    A = (Q * eigenvalues.to(torch.float64)) @ Q.T
    return ((A + A.T) / 2).to(dtype)


def low_rank_plus_noise(
    n: int, rank: int, *, noise: float = 1e-3, dtype: torch.dtype = torch.float64, seed: int = 0
) -> torch.Tensor:
    """``G G^T / rank + noise * I``-like PSD matrix: a rank-``rank`` part plus a small full-rank
    PSD perturbation ``noise * E E^T / n``."""
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(n, rank, generator=g, dtype=torch.float64)
    E = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = G @ G.T / rank + noise * (E @ E.T) / n
    return ((A + A.T) / 2).to(dtype)


def gaussian_kernel_matrix(
    n: int, d: int = 3, *, bandwidth: float = 1.0, dtype: torch.dtype = torch.float64, seed: int = 0
) -> torch.Tensor:
    """Gaussian-kernel Gram ``exp(-||x - z||^2 / (2 h^2))`` of ``n`` standard normal points: a
    PSD matrix with a fast-decaying spectrum, as met in kernel regression."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    K = torch.exp(-(torch.cdist(X, X) ** 2) / (2 * bandwidth**2))
    return ((K + K.T) / 2).to(dtype)


@pytest.fixture
def make_spd():
    return spd_matrix


@pytest.fixture
def make_low_rank():
    return low_rank_plus_noise


@pytest.fixture
def make_kernel_matrix():
    return gaussian_kernel_matrix


@pytest.fixture(autouse=True)
def _single_thread():
    """Run each linalg test on one BLAS / intra-op thread (torch and numpy/scipy).

    The tests use many small matrix products; on a loaded 2-core machine two threads make
    each of them tens of times slower through synchronisation. Restored afterwards.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)
