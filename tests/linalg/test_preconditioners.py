"""Low-rank spectral preconditioners: Nystrom (Frangella-Tropp-Udell) and EigenPro-style."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from kernelens.kernels import make_kernel
from kernelens.linalg import (
    EigenProPreconditioner,
    LowRankPreconditioner,
    NystromPreconditioner,
    conjugate_gradient,
)


def _gaussian(h: float = 1.0):
    def k(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(torch.cdist(A, B) ** 2) / (2 * h**2))

    return k


def _points(n: int, d: int = 3, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_exact_eigenpairs_flatten_the_top_of_the_spectrum(make_spd) -> None:
    n, l, mu = 60, 8, 1e-3
    lam = torch.logspace(2, -4, n, dtype=torch.float64)
    A = make_spd(n, lam)
    evals, evecs = torch.linalg.eigh(A)
    U, L = evecs.flip(1)[:, :l], evals.flip(0)[:l]
    P = LowRankPreconditioner(U, L, shift=mu)
    Pinv = P.as_operator().to_dense()
    torch.testing.assert_close(Pinv, Pinv.T)
    M = Pinv @ (A + mu * torch.eye(n, dtype=A.dtype))
    got = np.sort(np.linalg.eigvals(M.numpy()).real)
    # top l eigenvalues become lambda_l + mu, the rest stay lambda_j + mu
    want = np.sort(np.concatenate([np.full(l, float(L[-1]) + mu), lam[l:].numpy() + mu]))
    np.testing.assert_allclose(got, want, rtol=1e-8)
    assert P.floor == pytest.approx(float(L[-1]) + mu)
    # vector and block application agree
    r = torch.randn(n, dtype=A.dtype)
    torch.testing.assert_close(P.apply(r), P.apply(r[:, None])[:, 0])


def test_nystrom_is_exact_on_a_low_rank_matrix() -> None:
    G = torch.randn(150, 7, dtype=torch.float64)
    A = G @ G.T
    P = NystromPreconditioner(A, rank=10, shift=1e-3)
    approx = P.eigenvectors * P.eigenvalues @ P.eigenvectors.T
    torch.testing.assert_close(approx, A, rtol=0, atol=1e-9 * float(A.abs().max()))
    ref = np.linalg.eigvalsh(A.numpy())[::-1][:7]
    np.testing.assert_allclose(P.eigenvalues[:7].numpy(), ref, rtol=1e-9)
    assert (
        float((P.eigenvectors.T @ P.eigenvectors - torch.eye(10, dtype=A.dtype)).abs().max())
        < 1e-12
    )


# float64 at a tiny ridge; float32 at a ridge and tol it can reach (its attainable relative
# residual is about eps * cond(A), ~1e-4 for cond ~1e3)
CASES = [(torch.float64, 1e-4, 1e-8), (torch.float32, 1e-2, 1e-3)]


@pytest.mark.parametrize(("dtype", "mu", "tol"), CASES)
def test_nystrom_pcg_converges_in_clearly_fewer_iterations(dtype, mu: float, tol: float) -> None:
    # Gaussian kernel, d = 3, h = 2: a fast-decaying spectrum (as kernels have)
    n = 600
    X = _points(n, d=3, dtype=dtype)
    K = _gaussian(2.0)(X, X)
    A = K + mu * torch.eye(n, dtype=dtype)
    B = torch.randn(n, 2, dtype=dtype)
    plain = conjugate_gradient(A, B, tol=tol, warn=False)
    P = NystromPreconditioner(K, rank=50, shift=mu)
    pcg = conjugate_gradient(A, B, tol=tol, preconditioner=P)
    assert pcg.converged
    # measured: ~1000 -> ~120 (float64), ~160 -> ~10 (float32); demand 4x
    assert pcg.iterations * 4 < plain.iterations, (pcg.iterations, plain.iterations)
    ref = scipy.linalg.solve(A.double().numpy(), B.double().numpy(), assume_a="pos")
    err = np.linalg.norm(pcg.x.double().numpy() - ref) / np.linalg.norm(ref)
    cond = float(np.linalg.cond(A.double().numpy()))
    assert err < cond * tol * 2, (err, cond)


@pytest.mark.parametrize(("dtype", "mu", "tol"), CASES)
def test_eigenpro_preconditioner_estimates_and_pcg(dtype, mu: float, tol: float) -> None:
    n = 600
    X = _points(n, d=3, dtype=dtype)
    k = _gaussian(2.0)
    K = k(X, X)
    P = EigenProPreconditioner(k, X, rank=50, subsample_size=300, shift=mu)
    assert P.eigenvectors.shape == (n, 50) and P.eigenvectors.dtype == dtype
    assert P.subsample.shape == (300,)
    # column-sampling Nystrom never overestimates: K - U L U^T is PSD (up to round-off)
    resid = (K - P.eigenvectors * P.eigenvalues @ P.eigenvectors.T).double()
    eps = torch.finfo(dtype).eps
    assert float(torch.linalg.eigvalsh(resid).min()) > -100 * eps * float(K.diagonal().sum())
    # and the top eigenvalues are close
    top = np.linalg.eigvalsh(K.double().numpy())[::-1][:5]
    np.testing.assert_allclose(P.eigenvalues[:5].double().numpy(), top, rtol=0.05)
    A = K + mu * torch.eye(n, dtype=dtype)
    B = torch.randn(n, 2, dtype=dtype)
    plain = conjugate_gradient(A, B, tol=tol, warn=False)
    pcg = conjugate_gradient(A, B, tol=tol, preconditioner=P)
    assert pcg.converged and pcg.iterations * 4 < plain.iterations, (
        pcg.iterations,
        plain.iterations,
    )


def test_eigenpro_preconditioner_with_a_kernelens_kernel_in_float32() -> None:
    X = _points(600, d=4, dtype=torch.float32)
    k = make_kernel("laplace", bandwidth=2.0)
    P = EigenProPreconditioner(k, X, rank=40, subsample_size=300, shift=1e-2, memory_budget=2**20)
    assert P.eigenvectors.dtype == torch.float32
    K = k(X, X)
    A = K + 1e-2 * torch.eye(600)
    B = torch.randn(600, 3)
    plain = conjugate_gradient(A, B, tol=1e-3, warn=False)
    pcg = conjugate_gradient(A, B, tol=1e-3, preconditioner=P)
    # the Laplace kernel's spectrum decays slowly (measured ~100 -> ~30): demand 2x
    assert pcg.converged and pcg.iterations * 2 < plain.iterations


def test_bad_input() -> None:
    A = torch.eye(10, dtype=torch.float64)
    with pytest.raises(ValueError, match="exceeds"):
        NystromPreconditioner(A, rank=11)
    with pytest.raises(ValueError, match="shift"):
        NystromPreconditioner(A, rank=3, shift=-1.0)
    with pytest.raises(ValueError, match="positive semi-definite"):
        NystromPreconditioner(-A, rank=3)
    G = torch.randn(10, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="rank-deficient"):
        NystromPreconditioner(G @ G.T, rank=5, shift=0.0)
    X = _points(50)
    with pytest.raises(ValueError, match="smaller than subsample_size"):
        EigenProPreconditioner(_gaussian(), X, rank=20, subsample_size=20)
    with pytest.raises(ValueError, match="exceeds"):
        EigenProPreconditioner(_gaussian(), X, rank=5, subsample_size=60)
    with pytest.raises(TypeError, match="callable"):
        EigenProPreconditioner("gaussian", X, rank=5)
    with pytest.raises(ValueError, match="non-finite"):
        EigenProPreconditioner(_gaussian(), torch.full((5, 2), float("nan")), rank=2)
