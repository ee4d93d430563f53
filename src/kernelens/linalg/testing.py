"""The contract every :class:`~kernelens.linalg.LinearOperator` in kernelens must pass.

A test class for a new operator subclasses :class:`LinearOperatorContract` and implements only
:meth:`~LinearOperatorContract.make`, returning the operator and its dense matrix computed
independently; it inherits tests of ``matmat``, ``matvec``, ``rmatmat``, the adjoint,
``to_dense``, addition, scaling, shifts, composition and shape errors::

    class TestMyOperator(LinearOperatorContract):
        def make(self):
            A = torch.randn(6, 4, dtype=torch.float64)
            return MyOperator(A), A

The tests are plain methods named ``test_*`` with ``assert`` statements, so pytest collects
them from any ``Test*`` subclass. ``rtol`` is the relative tolerance against the dense matrix
(float64 round-off by default; raise it for float32 operators).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from .operator import LinearOperator

__all__ = ["LinearOperatorContract"]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = float(b.norm())
    return float((a - b).norm()) / (scale if scale > 0 else 1.0)


class LinearOperatorContract:
    """Inherited tests for one operator; subclasses implement :meth:`make`."""

    #: Relative tolerance of every comparison with the dense matrix.
    rtol: ClassVar[float] = 1e-12
    #: Columns of the test blocks.
    block: ClassVar[int] = 3

    def make(self) -> tuple[LinearOperator, torch.Tensor]:
        """The operator under test and its dense ``[m, n]`` matrix (independently computed)."""
        raise NotImplementedError("subclasses return (operator, dense matrix)")

    # -- helpers -------------------------------------------------------------------------------
    def _made(self) -> tuple[LinearOperator, torch.Tensor]:
        cache = type(self).__dict__.get("_contract_cache")
        if cache is None:
            op, A = self.make()
            cache = (op, A.to(op.dtype))
            type(self)._contract_cache = cache
        return cache

    def _block(self, rows: int, seed: int) -> torch.Tensor:
        op, _ = self._made()
        g = torch.Generator().manual_seed(seed)
        return torch.randn(rows, self.block, generator=g, dtype=torch.float64).to(op.dtype)

    def _has_adjoint(self, op: LinearOperator) -> bool:
        try:
            op.rmatmat(torch.zeros(op.shape[0], 1, dtype=op.dtype, device=op.device))
        except NotImplementedError:
            return False
        return True

    # -- the contract --------------------------------------------------------------------------
    def test_shape_and_dtype(self) -> None:
        op, A = self._made()
        assert op.shape == tuple(A.shape)
        assert op.matmat(self._block(op.shape[1], 0)).dtype == op.dtype

    def test_matmat(self) -> None:
        op, A = self._made()
        V = self._block(op.shape[1], 1)
        out = op.matmat(V)
        assert out.shape == (op.shape[0], self.block)
        assert _rel(out, A @ V) <= self.rtol

    def test_matvec_and_matmul(self) -> None:
        op, A = self._made()
        v = self._block(op.shape[1], 2)[:, 0]
        assert op.matvec(v).shape == (op.shape[0],)
        assert _rel(op.matvec(v), A @ v) <= self.rtol
        assert _rel(op @ v, A @ v) <= self.rtol

    def test_rmatmat_and_adjoint(self) -> None:
        op, A = self._made()
        if not self._has_adjoint(op):
            return
        U = self._block(op.shape[0], 3)
        assert _rel(op.rmatmat(U), A.T @ U) <= self.rtol
        assert _rel(op.adjoint().matmat(U), A.T @ U) <= self.rtol
        v = self._block(op.shape[1], 4)[:, 0]
        u = U[:, 0]
        lhs, rhs = float(op.matvec(v) @ u), float(v @ op.rmatvec(u))
        assert abs(lhs - rhs) <= self.rtol * max(1.0, abs(lhs)) * 10

    def test_symmetric_flag_is_true(self) -> None:
        op, A = self._made()
        if op.symmetric:
            assert op.shape[0] == op.shape[1]
            assert _rel(A, A.T) <= self.rtol
            assert op.adjoint() is op

    def test_to_dense(self) -> None:
        op, A = self._made()
        assert _rel(op.to_dense(block=2), A) <= self.rtol

    def test_addition_and_scaling(self) -> None:
        op, A = self._made()
        V = self._block(op.shape[1], 5)
        assert _rel((op + op).matmat(V), 2 * (A @ V)) <= self.rtol
        assert _rel((2.5 * op).matmat(V), 2.5 * (A @ V)) <= self.rtol
        assert _rel((op * -1.0).matmat(V), -(A @ V)) <= self.rtol

    def test_shift(self) -> None:
        op, A = self._made()
        if op.shape[0] != op.shape[1]:
            return
        V = self._block(op.shape[1], 6)
        assert _rel(op.shift(0.75).matmat(V), A @ V + 0.75 * V) <= self.rtol

    def test_composition_with_adjoint(self) -> None:
        op, A = self._made()
        if not self._has_adjoint(op):
            return
        V = self._block(op.shape[1], 7)
        assert _rel((op.adjoint() @ op).matmat(V), A.T @ (A @ V)) <= self.rtol

    def test_wrong_block_shape_is_refused(self) -> None:
        op, _ = self._made()
        bad = torch.zeros(op.shape[1] + 1, 2, dtype=op.dtype, device=op.device)
        try:
            op.matmat(bad)
        except ValueError as err:
            assert "matmat" in str(err)
        else:
            raise AssertionError("matmat accepted a block with the wrong number of rows")
