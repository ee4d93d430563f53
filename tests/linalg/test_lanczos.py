"""Thick-restart Lanczos against numpy/scipy eigh and scipy.sparse.linalg.eigsh."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as sla
import torch

from kernelens.linalg import ConvergenceWarning, LinearOperator, lanczos_eigh


def _counting(A: torch.Tensor) -> tuple[LinearOperator, list[int]]:
    count = [0]

    def mm(V: torch.Tensor) -> torch.Tensor:
        count[0] += V.shape[1]
        return A @ V

    return LinearOperator(A.shape, mm, dtype=A.dtype, symmetric=True), count


def _check_eigenpairs(
    A: torch.Tensor, evals: torch.Tensor, evecs: torch.Tensor, ref_vals: np.ndarray, tol: float
) -> None:
    k = len(ref_vals)
    scale = float(np.abs(np.linalg.eigvalsh(A.double().numpy())).max())
    np.testing.assert_allclose(evals.double().numpy(), ref_vals, rtol=0, atol=tol * scale)
    eye = torch.eye(k, dtype=evecs.dtype)
    assert float((evecs.T @ evecs - eye).abs().max()) < 100 * torch.finfo(evecs.dtype).eps * k
    residual = (A @ evecs - evecs * evals).norm(dim=0).max()
    assert float(residual) < max(tol, 1e-6 if A.dtype == torch.float32 else 1e-9) * scale * 10


@pytest.mark.parametrize("kind", ["geometric", "low_rank_plus_noise", "ill_conditioned"])
def test_matches_eigsh_on_psd_matrices(make_spd, make_low_rank, kind: str) -> None:
    n, k = 300, 6
    if kind == "geometric":
        A = make_spd(n, 0.8 ** torch.arange(n, dtype=torch.float64))
    elif kind == "low_rank_plus_noise":
        A = make_low_rank(n, 10, noise=1e-3)
    else:
        A = make_spd(n, cond=1e12)
    evals, evecs = lanczos_eigh(A, k)
    ref_vals, ref_vecs = sla.eigsh(A.numpy(), k=k, which="LA", tol=1e-14)
    order = np.argsort(-ref_vals)
    ref_vals, ref_vecs = ref_vals[order], ref_vecs[:, order]
    # default tol 1e-10: eigenvalue error <= residual^2 / gap, far below 1e-12 here
    _check_eigenpairs(A, evals, evecs, ref_vals, 1e-12)
    # eigenvectors agree up to sign where the eigenvalue gap is not tiny
    gaps = np.abs(np.diff(np.linalg.eigvalsh(A.numpy())[::-1][: k + 1]))
    for i in range(k):
        if min(gaps[max(i - 1, 0)], gaps[i]) > 1e-6:
            overlap = abs(float(evecs[:, i] @ torch.from_numpy(ref_vecs[:, i])))
            assert overlap == pytest.approx(1.0, abs=1e-8)


def test_indefinite_largest_and_smallest_algebraic(make_spd) -> None:
    n = 250
    lam = torch.linspace(-3.0, 1.0, n, dtype=torch.float64)
    A = make_spd(n, lam)
    top, _ = lanczos_eigh(A, 4)
    np.testing.assert_allclose(top.numpy(), lam.flip(0)[:4].numpy(), atol=1e-12)
    bottom, vecs = lanczos_eigh(A, 4, largest=False)
    np.testing.assert_allclose(bottom.numpy(), lam[:4].numpy(), atol=1e-12)
    assert float((A @ vecs - vecs * bottom).norm(dim=0).max()) < 1e-8


def test_float32_within_its_precision(make_spd) -> None:
    n = 300
    lam = 0.8 ** torch.arange(n, dtype=torch.float64)
    A = make_spd(n, lam, dtype=torch.float32)
    evals, evecs = lanczos_eigh(A, 5)
    assert evals.dtype == torch.float32 and evecs.dtype == torch.float32
    # float32 A carries ~1e-7 relative rounding; the default tol 1e-4 bounds the residual
    ref = np.linalg.eigvalsh(A.double().numpy())[::-1][:5]
    np.testing.assert_allclose(evals.double().numpy(), ref, atol=1e-5)
    assert float((A @ evecs - evecs * evals).norm(dim=0).max()) < 1e-4


@pytest.mark.parametrize("block_size", [1, 3])
def test_restarts_keep_memory_bounded_and_still_converge(make_spd, block_size: int) -> None:
    # a slowly decaying spectrum needs far more than ncv Krylov vectors: forces restarts
    n = 400
    lam = torch.linspace(1.0, 0.0, n, dtype=torch.float64) ** 2
    A = make_spd(n, lam)
    op, count = _counting(A)
    evals, evecs = lanczos_eigh(op, 5, ncv=5 + 4 * block_size + 8, block_size=block_size)
    assert count[0] > 5 + 4 * block_size + 8  # several restart cycles happened
    _check_eigenpairs(A, evals, evecs, lam[:5].numpy(), 1e-12)


def test_block_size_resolves_a_repeated_eigenvalue(make_spd) -> None:
    n = 200
    lam = torch.cat([torch.full((3,), 2.0), torch.linspace(1.0, 0.0, n - 3)]).double()
    A = make_spd(n, lam)
    evals, evecs = lanczos_eigh(A, 4, block_size=3)
    np.testing.assert_allclose(evals.numpy(), [2.0, 2.0, 2.0, 1.0], atol=1e-12)
    # the three vectors span the eigenspace of 2
    P = evecs[:, :3] @ evecs[:, :3].T
    assert float((A @ P - 2.0 * P).abs().max()) < 1e-8


def test_exact_low_rank_operator_breaks_down_and_recovers() -> None:
    # rank 3: the Krylov space is invariant after 3 steps; k=5 asks for two zero eigenvalues
    g = torch.Generator().manual_seed(1)
    G = torch.randn(120, 3, generator=g, dtype=torch.float64)
    A = G @ G.T
    evals, evecs = lanczos_eigh(A, 5)
    ref = np.linalg.eigvalsh(A.numpy())[::-1][:5]
    np.testing.assert_allclose(evals.numpy(), ref, atol=1e-10 * ref[0])
    assert float((evecs.T @ evecs - torch.eye(5, dtype=A.dtype)).abs().max()) < 1e-12


def test_small_operator_is_solved_densely() -> None:
    A = torch.diag(torch.arange(10.0, dtype=torch.float64))
    op, count = _counting(A)
    evals, _ = lanczos_eigh(op, 3)
    np.testing.assert_allclose(evals.numpy(), [9.0, 8.0, 7.0])
    assert count[0] == 10  # formed once, column by column


def test_seeds_are_reproducible(make_spd) -> None:
    A = make_spd(150, 0.7 ** torch.arange(150, dtype=torch.float64))
    e1, v1 = lanczos_eigh(A, 3, seed=4)
    e2, v2 = lanczos_eigh(A, 3, seed=torch.Generator().manual_seed(4))
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)
    torch.testing.assert_close(v1, v2, rtol=0, atol=0)
    v0 = torch.ones(150, dtype=torch.float64)
    e3, _ = lanczos_eigh(A, 3, v0=v0)
    torch.testing.assert_close(e3, e1, rtol=0, atol=1e-12)


def test_not_converged_warns(make_spd) -> None:
    lam = torch.linspace(1.0, 0.0, 300, dtype=torch.float64)
    A = make_spd(300, lam)
    with pytest.warns(ConvergenceWarning, match="lanczos_eigh did not converge"):
        evals, evecs = lanczos_eigh(A, 4, max_iter=30)
    assert evals.shape == (4,) and evecs.shape == (300, 4)


def test_bad_input() -> None:
    A = torch.eye(30, dtype=torch.float64)
    with pytest.raises(ValueError, match="exceeds"):
        lanczos_eigh(A, 31)
    with pytest.raises(ValueError, match=">= 1"):
        lanczos_eigh(A, 0)
    with pytest.raises(ValueError, match="square"):
        lanczos_eigh(torch.randn(30, 20), 2)
    with pytest.raises(ValueError, match="not symmetric"):
        lanczos_eigh(torch.triu(torch.ones(30, 30)), 2)
    with pytest.raises(ValueError, match="non-finite"):
        lanczos_eigh(torch.full((30, 30), float("nan")), 2)
    with pytest.raises(ValueError, match="ncv"):
        lanczos_eigh(A, 5, ncv=6)
    with pytest.raises(ValueError, match="v0"):
        lanczos_eigh(torch.eye(100, dtype=torch.float64), 2, v0=torch.zeros(100))
