"""The dense RFM solve against an independent float64 solve with the kernel classes."""

from __future__ import annotations

import pytest
import torch

from kernelens.rfm._gradients import _weights
from kernelens.rfm._solve import solve_dense
from kernelens.rfm.machine import base_kernel


@pytest.mark.parametrize("kind", ["laplace", "gaussian", "product_laplace"])
def test_solve_dense_matches_a_direct_solve_and_returns_the_agop_weights(kind):
    g = torch.Generator().manual_seed(3)
    U = torch.randn(80, 6, dtype=torch.float64, generator=g)
    U[7] = U[3]  # a duplicate point: zero distance off the diagonal
    Y = torch.randn(80, 2, dtype=torch.float64, generator=g)
    kernel, reg = base_kernel(kind, 2.5), 1e-2
    sol, W = solve_dense(kind, kernel, U, Y, reg)

    A = kernel(U) + reg * torch.eye(80, dtype=torch.float64)
    coef = torch.linalg.solve(A, Y)
    torch.testing.assert_close(sol.coef, coef, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(sol.fitted, kernel(U) @ coef, rtol=1e-9, atol=1e-11)
    if kind == "product_laplace":
        assert W is None
        return
    ref = _weights(kind, U, U, kernel.bandwidth)
    off = ~torch.eye(80, dtype=torch.bool)  # the diagonal multiplies u - u = 0 (see docs)
    torch.testing.assert_close(W[off], ref[off], rtol=1e-9, atol=1e-12)
