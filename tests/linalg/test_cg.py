"""Conjugate gradients against scipy.linalg.solve and scipy.sparse.linalg.cg."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse.linalg as sla
import torch

from kernelens.linalg import (
    ConvergenceWarning,
    DenseOperator,
    LinearOperator,
    conjugate_gradient,
)


def _rel_residual(A: torch.Tensor, X: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return (A @ X - B).norm(dim=0) / B.norm(dim=0)


@pytest.mark.parametrize(
    ("dtype", "cond", "tol"),
    [(torch.float64, 1e4, 1e-10), (torch.float32, 1e2, 1e-5)],
)
def test_cg_matches_scipy_solve(make_spd, dtype: torch.dtype, cond: float, tol: float) -> None:
    A = make_spd(80, cond=cond, dtype=dtype)
    B = torch.randn(80, 3, dtype=dtype)
    res = conjugate_gradient(A, B, tol=tol)
    assert res.converged
    assert res.x.shape == (80, 3) and res.x.dtype == dtype
    # the reported residual is the true one, and below tol
    assert bool((res.residual_norm <= tol).all())
    torch.testing.assert_close(res.residual_norm, _rel_residual(A, res.x, B))
    ref = scipy.linalg.solve(A.double().numpy(), B.double().numpy(), assume_a="pos")
    # forward error <= cond * relative residual (plus the float32 rounding of A itself)
    err = np.linalg.norm(res.x.double().numpy() - ref, axis=0) / np.linalg.norm(ref, axis=0)
    bound = cond * tol * 2 + (cond * 1e-6 if dtype == torch.float32 else 0.0)
    assert np.all(err <= bound), (err, bound)


def test_cg_iterations_and_solution_agree_with_scipy_cg(make_spd) -> None:
    A = make_spd(120, cond=1e3)
    b = torch.randn(120, dtype=torch.float64)
    iters = []
    x_ref, info = sla.cg(A.numpy(), b.numpy(), rtol=1e-9, maxiter=1000, callback=iters.append)
    assert info == 0
    res = conjugate_gradient(A, b, tol=1e-9)
    assert res.converged and res.x.shape == (120,)
    # same Krylov method: same iteration count up to round-off effects
    assert abs(res.iterations - len(iters)) <= max(3, len(iters) // 20)
    np.testing.assert_allclose(res.x.numpy(), x_ref, rtol=0, atol=1e-5 * np.abs(x_ref).max())


def test_block_rhs_equals_column_by_column(make_spd) -> None:
    A = make_spd(60, cond=1e3)
    B = torch.randn(60, 4, dtype=torch.float64)
    B[:, 2] *= 1e-3  # columns of very different scale converge independently
    block = conjugate_gradient(A, B, tol=1e-10)
    assert block.converged
    for j in range(4):
        single = conjugate_gradient(A, B[:, j], tol=1e-10)
        np.testing.assert_allclose(
            block.x[:, j].numpy(),
            single.x.numpy(),
            rtol=1e-7,
            atol=1e-9 * float(single.x.abs().max()),
        )


def test_zero_rhs_column_and_exact_initial_guess(make_spd) -> None:
    A = make_spd(30)
    B = torch.randn(30, 2, dtype=torch.float64)
    B[:, 1] = 0
    res = conjugate_gradient(A, B)
    assert res.converged and bool((res.x[:, 1] == 0).all())
    x_exact = torch.linalg.solve(A, B[:, 0])
    res0 = conjugate_gradient(A, B[:, 0], x0=x_exact)
    assert res0.converged and res0.iterations == 0


def test_exact_preconditioner_converges_at_once(make_spd) -> None:
    A = make_spd(50, cond=1e6)
    b = torch.randn(50, dtype=torch.float64)
    Ainv = torch.linalg.inv(A)
    for precond in (Ainv, DenseOperator(Ainv, symmetric=True), lambda R: Ainv @ R):
        res = conjugate_gradient(A, b, preconditioner=precond, tol=1e-8)
        assert res.converged and res.iterations <= 2


def test_jacobi_preconditioner_helps_on_a_badly_scaled_matrix(make_spd) -> None:
    # D S D with a well-conditioned S and a wild diagonal scaling D: Jacobi undoes D
    S = make_spd(100, cond=10.0)
    d = torch.logspace(-3, 3, 100, dtype=torch.float64)
    A = d[:, None] * S * d[None, :]
    b = torch.randn(100, dtype=torch.float64)
    plain = conjugate_gradient(A, b, tol=1e-8, warn=False)
    jacobi = conjugate_gradient(A, b, tol=1e-8, preconditioner=lambda R: R / A.diagonal()[:, None])
    assert jacobi.converged
    assert jacobi.iterations * 3 < plain.iterations


def test_nonconvergence_warns_and_reports(make_spd) -> None:
    A = make_spd(100, cond=1e8)
    b = torch.randn(100, dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        res = conjugate_gradient(A, b, max_iter=5)
    assert not res.converged and res.iterations == 5
    assert float(res.residual_norm) > 1e-8
    torch.testing.assert_close(res.residual_norm, _rel_residual(A, res.x[:, None], b[:, None])[0])


def test_converged_flag_is_never_optimistic_on_an_ill_conditioned_system(make_spd) -> None:
    # cond 1e12: the recursive residual drifts from the true one; the result must not lie
    A = make_spd(150, cond=1e12)
    B = torch.randn(150, 2, dtype=torch.float64)
    res = conjugate_gradient(A, B, tol=1e-9, max_iter=800, warn=False)
    true = _rel_residual(A, res.x, B)
    torch.testing.assert_close(res.residual_norm, true)
    if res.converged:
        assert bool((true <= 1e-9).all())


def test_indefinite_matrix_is_reported() -> None:
    A = torch.diag(torch.tensor([1.0, 2.0, -3.0, 4.0] * 10, dtype=torch.float64))
    b = torch.ones(40, dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match="not positive definite"):
        res = conjugate_gradient(A, b)
    assert not res.converged


def test_callback_and_history() -> None:
    A = torch.diag(torch.arange(1.0, 21.0, dtype=torch.float64))
    b = torch.ones(20, dtype=torch.float64)
    seen = []
    res = conjugate_gradient(A, b, callback=lambda it, X, rel: seen.append((it, float(rel.max()))))
    assert res.converged
    assert [s[0] for s in seen] == list(range(1, res.iterations + 1))
    assert len(res.history) == res.iterations + 1 and res.history[0] == pytest.approx(1.0)


def test_matrix_free_operator_and_symmetry_probe(make_spd) -> None:
    A = make_spd(40)
    b = torch.randn(40, dtype=torch.float64)
    # an operator that is symmetric but not declared so passes the probe
    op = LinearOperator((40, 40), lambda V: A @ V, dtype=A.dtype)
    assert conjugate_gradient(op, b).converged
    N = A + torch.triu(torch.ones(40, 40, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="not symmetric"):
        conjugate_gradient(LinearOperator((40, 40), lambda V: N @ V, dtype=N.dtype), b)
    with pytest.raises(ValueError, match="not symmetric"):
        conjugate_gradient(N, b)


def test_bad_input_errors() -> None:
    A = torch.eye(5, dtype=torch.float64)
    with pytest.raises(ValueError, match="square"):
        conjugate_gradient(torch.randn(5, 4), torch.randn(5))
    with pytest.raises(ValueError, match="rows"):
        conjugate_gradient(A, torch.randn(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-finite"):
        conjugate_gradient(A, torch.tensor([1.0, float("nan"), 0, 0, 0], dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        conjugate_gradient(A, torch.randn(5, dtype=torch.float32))
    with pytest.raises(ValueError, match="tol"):
        conjugate_gradient(A, torch.randn(5, dtype=torch.float64), tol=-1.0)
    with pytest.raises(ValueError, match="preconditioner is not positive definite"):
        conjugate_gradient(A, torch.randn(5, dtype=torch.float64), preconditioner=-A)
    with pytest.raises(ValueError, match="shape"):
        conjugate_gradient(A, torch.randn(5, dtype=torch.float64), preconditioner=torch.eye(4))
