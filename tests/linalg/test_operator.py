"""LinearOperator: products, adjoint, composition, sums, shifts, to_dense, to_scipy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as sla
import torch

from kernelens.linalg import (
    DenseOperator,
    DiagonalOperator,
    IdentityOperator,
    LinearOperator,
    aslinearoperator,
)


def _rect(m: int = 7, n: int = 5, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(m, n, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dense_operator_products_match_matrix(dtype: torch.dtype) -> None:
    A = _rect(dtype=dtype)
    op = DenseOperator(A)
    v, V = torch.randn(5, dtype=dtype), torch.randn(5, 3, dtype=dtype)
    u, U = torch.randn(7, dtype=dtype), torch.randn(7, 2, dtype=dtype)
    torch.testing.assert_close(op.matvec(v), A @ v)
    torch.testing.assert_close(op.matmat(V), A @ V)
    torch.testing.assert_close(op @ v, A @ v)
    torch.testing.assert_close(op.rmatvec(u), A.T @ u)
    torch.testing.assert_close(op.rmatmat(U), A.T @ U)
    assert op.shape == (7, 5) and op.dtype == dtype


def test_adjoint_and_T_of_a_general_operator() -> None:
    A = _rect()
    op = LinearOperator(A.shape, lambda V: A @ V, rmatmat=lambda U: A.T @ U, dtype=A.dtype)
    torch.testing.assert_close(op.adjoint().to_dense(), A.T)
    torch.testing.assert_close(op.T.T.to_dense(), A)
    # <A v, u> = <v, A^T u>
    v, u = torch.randn(5, dtype=A.dtype), torch.randn(7, dtype=A.dtype)
    torch.testing.assert_close(op.matvec(v) @ u, v @ op.rmatvec(u))


def test_symmetric_operator_is_its_own_adjoint() -> None:
    S = torch.randn(4, 4, dtype=torch.float64)
    S = S + S.T
    op = LinearOperator((4, 4), lambda V: S @ V, dtype=S.dtype, symmetric=True)
    assert op.adjoint() is op
    torch.testing.assert_close(op.rmatmat(torch.eye(4, dtype=S.dtype)), S)


def test_operator_without_adjoint_says_how_to_fix() -> None:
    A = _rect()
    op = LinearOperator(A.shape, lambda V: A @ V, dtype=A.dtype)
    with pytest.raises(NotImplementedError, match="rmatmat"):
        op.rmatvec(torch.randn(7, dtype=A.dtype))
    with pytest.raises(NotImplementedError, match="rmatmat"):
        op.adjoint()


def test_composition_sum_scaling_and_shift() -> None:
    A, B = _rect(7, 5), _rect(5, 4)
    C = _rect(7, 5)
    opA, opB, opC = DenseOperator(A), DenseOperator(B), DenseOperator(C)
    torch.testing.assert_close((opA @ opB).to_dense(), A @ B)
    torch.testing.assert_close((opA @ opB).T.to_dense(), (A @ B).T)
    torch.testing.assert_close((opA + opC).to_dense(), A + C)
    torch.testing.assert_close((2.5 * opA).to_dense(), 2.5 * A)
    torch.testing.assert_close((opA * -1.0).T.to_dense(), -A.T)
    S = A.T @ A
    shifted = DenseOperator(S, symmetric=True).shift(0.3)
    torch.testing.assert_close(shifted.to_dense(), S + 0.3 * torch.eye(5, dtype=S.dtype))
    assert shifted.symmetric


def test_shape_errors_name_the_problem() -> None:
    opA, opB = DenseOperator(_rect(7, 5)), DenseOperator(_rect(3, 4))
    with pytest.raises(ValueError, match="compose"):
        opA @ opB
    with pytest.raises(ValueError, match="add"):
        opA + opB
    with pytest.raises(ValueError, match=r"\[5, k\]"):
        opA.matmat(torch.randn(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="square"):
        opA.shift(1.0)
    with pytest.raises(ValueError, match="square"):
        LinearOperator((3, 4), lambda V: V, symmetric=True)


def test_diagonal_and_identity() -> None:
    d = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(DiagonalOperator(d).to_dense(), torch.diag(d))
    V = torch.randn(3, 2, dtype=torch.float64)
    torch.testing.assert_close(DiagonalOperator(d).matmat(V), d[:, None] * V)
    eye = IdentityOperator(3, dtype=torch.float64)
    torch.testing.assert_close(eye.matmat(V), V)


def test_to_dense_in_blocks_matches_matrix() -> None:
    A = _rect(9, 600)
    op = LinearOperator(A.shape, lambda V: A @ V, dtype=A.dtype)
    torch.testing.assert_close(op.to_dense(block=128), A)


def test_to_scipy_round_trip_and_scipy_solvers(rng: np.random.Generator) -> None:
    A = _rect(6, 4)
    sop = DenseOperator(A).to_scipy()
    x, y = rng.standard_normal(4), rng.standard_normal(6)
    np.testing.assert_allclose(sop.matvec(x), A.numpy() @ x, rtol=1e-12)
    np.testing.assert_allclose(sop.rmatvec(y), A.numpy().T @ y, rtol=1e-12)
    np.testing.assert_allclose(sop.matmat(np.eye(4)), A.numpy(), rtol=1e-12)
    assert sop.dtype == np.float64
    # scipy's own CG runs on the wrapped operator
    S = A.T @ A + torch.eye(4, dtype=A.dtype)
    b = rng.standard_normal(4)
    sol, info = sla.cg(DenseOperator(S, symmetric=True).to_scipy(), b, rtol=1e-12)
    assert info == 0
    np.testing.assert_allclose(sol, np.linalg.solve(S.numpy(), b), rtol=1e-9)


def test_aslinearoperator_accepts_arrays_and_rejects_others(rng: np.random.Generator) -> None:
    arr = rng.standard_normal((3, 3))
    op = aslinearoperator(arr)
    np.testing.assert_allclose(op.to_dense().numpy(), arr)
    assert aslinearoperator(op) is op
    with pytest.raises(TypeError, match="LinearOperator"):
        aslinearoperator([[1.0]])
