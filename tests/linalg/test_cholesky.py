"""Cholesky solves with automatic jitter, against scipy.linalg, batched, with gradients."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from kernelens.linalg import JitterWarning, cholesky_solve, jittered_cholesky


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-10), (torch.float32, 1e-3)])
def test_cholesky_solve_matches_scipy(make_spd, dtype: torch.dtype, rtol: float) -> None:
    # cond 1e3: float32 solves lose about cond * eps ~ 1e-4 relative
    A = make_spd(30, cond=1e3, dtype=dtype)
    B = torch.randn(30, 4, dtype=dtype)
    X = cholesky_solve(A, B)
    ref = scipy.linalg.solve(A.double().numpy(), B.double().numpy(), assume_a="pos")
    np.testing.assert_allclose(X.double().numpy(), ref, rtol=rtol, atol=rtol * np.abs(ref).max())
    x = cholesky_solve(A, B[:, 0])
    assert x.shape == (30,)
    np.testing.assert_allclose(
        x.double().numpy(), ref[:, 0], rtol=rtol, atol=rtol * np.abs(ref).max()
    )


def test_batched_solve_matches_per_matrix_solves(make_spd) -> None:
    A = torch.stack([make_spd(12, seed=s) for s in range(3)])
    B = torch.randn(3, 12, 2, dtype=torch.float64)
    X = cholesky_solve(A, B)
    for i in range(3):
        ref = scipy.linalg.solve(A[i].numpy(), B[i].numpy(), assume_a="pos")
        np.testing.assert_allclose(X[i].numpy(), ref, rtol=1e-10)
    # a batch of vectors, and one right-hand side broadcast over the batch
    x = cholesky_solve(A, B[..., 0])
    assert x.shape == (3, 12)
    np.testing.assert_allclose(x.numpy(), X[..., 0].numpy(), rtol=1e-12)
    Xb = cholesky_solve(A, B[0])
    for i in range(3):
        np.testing.assert_allclose(
            Xb[i].numpy(), scipy.linalg.solve(A[i].numpy(), B[0].numpy()), rtol=1e-10
        )


def test_no_jitter_and_no_warning_for_a_pd_matrix(make_spd) -> None:
    import warnings

    A = make_spd(10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L, jitter = jittered_cholesky(A)
    assert jitter == 0.0
    torch.testing.assert_close(L @ L.T, A)


def test_singular_matrix_gets_jitter_with_a_warning() -> None:
    G = torch.randn(20, 5, dtype=torch.float64)
    A = G @ G.T  # rank 5: not numerically positive definite
    with pytest.warns(JitterWarning, match="jitter"):
        L, jitter = jittered_cholesky(A)
    assert jitter > 0
    # the factor is exact for the jittered matrix, and the jitter is small
    torch.testing.assert_close(L @ L.T, A + jitter * torch.eye(20, dtype=A.dtype))
    assert jitter < 1e-8 * float(A.diagonal().mean())
    # the solve with jitter is a least-squares-like solution: A x ~ b for b in range(A)
    b = A @ torch.randn(20, dtype=torch.float64)
    with pytest.warns(JitterWarning):
        x = cholesky_solve(A, b)
    assert float((A @ x - b).norm() / b.norm()) < 1e-5


def test_far_from_pd_raises() -> None:
    A = -torch.eye(4, dtype=torch.float64)
    with pytest.raises(torch.linalg.LinAlgError, match="far from positive definite"):
        jittered_cholesky(A)


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"\[\.\.\., n, n\]"):
        jittered_cholesky(torch.randn(3, 4))
    with pytest.raises(ValueError, match="rows"):
        cholesky_solve(torch.eye(3), torch.randn(4, 2))


def test_gradcheck_through_cholesky_solve(make_spd) -> None:
    A0 = make_spd(6, cond=10.0)
    B0 = torch.randn(6, 2, dtype=torch.float64)

    def f(S: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        # symmetrise so that the perturbations gradcheck applies stay symmetric
        return cholesky_solve((S + S.T) / 2, B)

    assert torch.autograd.gradcheck(
        f, (A0.clone().requires_grad_(), B0.clone().requires_grad_()), eps=1e-6, atol=1e-7
    )
