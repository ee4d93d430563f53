"""Kernel systems solved with their products on the workers, against the in-process solve."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("distributed")

from kernelens.kernels import make_kernel
from kernelens.linalg import eigenpro_solve, solve_kernel_system


def _problem(n: int = 1500):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.sin(X[:, 0]) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return X, y


def test_kernel_matvec_with_client(client):
    X, y = _problem(800)
    k = make_kernel("gaussian", bandwidth=2.0)
    got = k.matvec(X, None, y, client=client)
    assert got.shape == y.shape
    assert float((got - k(X) @ y).norm() / (k(X) @ y).norm()) < 1e-12


def test_cg_route_matches_in_process(client):
    X, y = _problem(600)
    k = make_kernel("laplace", bandwidth=3.0)
    kw = {"shift": 1e-1, "solver": "cg", "tol": 1e-10, "rank": 50, "seed": 0}
    local = solve_kernel_system(k, X, y, **kw)
    dist = solve_kernel_system(k, X, y, client=client, **kw)
    assert dist.solver == "cg" and dist.converged
    assert dist.iterations == local.iterations
    assert float((dist.x - local.x).norm() / local.x.norm()) < 1e-12
    exact = torch.linalg.solve(k(X) + 1e-1 * torch.eye(X.shape[0], dtype=X.dtype), y)
    assert float((dist.x - exact).norm() / exact.norm()) < 1e-8


def test_auto_route_uses_cg_with_a_client_and_cholesky_is_refused(client):
    X, y = _problem(400)
    k = make_kernel("laplace", bandwidth=3.0)
    assert solve_kernel_system(k, X, y, shift=1e-1, client=client).solver == "cg"
    with pytest.raises(ValueError, match="cholesky"):
        solve_kernel_system(k, X, y, shift=1e-1, solver="cholesky", client=client)


def test_eigenpro_matches_in_process(client):
    X, y = _problem(1200)
    k = make_kernel("laplace", bandwidth=3.0)
    kw = {"shift": 1e-1, "top_q": 20, "subsample_size": 300, "max_epochs": 3, "seed": 1}
    local = eigenpro_solve(k, X, y, warn=False, **kw)
    dist = eigenpro_solve(k, X, y, warn=False, client=client, **kw)
    assert float((dist.x - local.x).norm() / local.x.norm()) < 1e-12


def test_plain_callable_kernels_are_refused_with_a_client(client):
    X, y = _problem(300)
    k = make_kernel("laplace", bandwidth=3.0)
    with pytest.raises(TypeError, match="Kernel"):
        solve_kernel_system(lambda a, b: k(a, b), X, y, shift=1e-1, solver="cg", client=client)
