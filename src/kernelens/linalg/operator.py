"""A small LinearOperator type: matrices known only through their products.

Kernels over many points, the NTK of a large model and the global NTK are all too big to
form; they are :class:`LinearOperator` s whose ``matmat`` works in tiles. Solvers and
eigensolvers in :mod:`kernelens.linalg` only ever call ``matmat``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = [
    "DenseOperator",
    "DiagonalOperator",
    "IdentityOperator",
    "LinearOperator",
    "aslinearoperator",
]

MatMat = Callable[[torch.Tensor], torch.Tensor]


class LinearOperator:
    """A linear map ``R^n -> R^m`` given by its action on blocks of vectors.

    Args:
        shape: ``(m, n)``.
        matmat: ``V [n, k] -> A V [m, k]``.
        rmatmat: ``U [m, k] -> A^T U [n, k]``; omit for symmetric operators.
        dtype, device: of the vectors the operator accepts and returns.
        symmetric: declare ``A = A^T`` (then ``rmatmat`` defaults to ``matmat``).
    """

    def __init__(
        self,
        shape: tuple[int, int],
        matmat: MatMat,
        *,
        rmatmat: MatMat | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        symmetric: bool = False,
    ) -> None:
        m, n = (int(s) for s in shape)
        if m < 0 or n < 0:
            raise ValueError(f"shape must be non-negative, got {shape}.")
        if symmetric and m != n:
            raise ValueError(f"a symmetric operator must be square, got shape {shape}.")
        self.shape = (m, n)
        self._matmat = matmat
        self._rmatmat = rmatmat if rmatmat is not None else (matmat if symmetric else None)
        self.dtype = dtype if dtype is not None else torch.get_default_dtype()
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.symmetric = symmetric

    # -- products -----------------------------------------------------------------------
    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``A V`` for ``V [n, k]`` -> ``[m, k]``."""
        if V.ndim != 2 or V.shape[0] != self.shape[1]:
            raise ValueError(
                f"matmat expects a [{self.shape[1]}, k] block, got shape {tuple(V.shape)}."
            )
        return self._matmat(V)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``A v`` for ``v [n]`` -> ``[m]`` (a ``[n, k]`` block is accepted too)."""
        if v.ndim == 2:
            return self.matmat(v)
        if v.ndim != 1:
            raise ValueError(f"matvec expects a vector [{self.shape[1]}], got {tuple(v.shape)}.")
        return self.matmat(v[:, None])[:, 0]

    def rmatmat(self, U: torch.Tensor) -> torch.Tensor:
        """``A^T U`` for ``U [m, k]`` -> ``[n, k]``."""
        if self._rmatmat is None:
            raise NotImplementedError(
                "this operator has no adjoint; pass rmatmat= when constructing it."
            )
        if U.ndim != 2 or U.shape[0] != self.shape[0]:
            raise ValueError(
                f"rmatmat expects a [{self.shape[0]}, k] block, got shape {tuple(U.shape)}."
            )
        return self._rmatmat(U)

    def rmatvec(self, u: torch.Tensor) -> torch.Tensor:
        """``A^T u`` for ``u [m]`` -> ``[n]``."""
        return self.rmatmat(u[:, None])[:, 0] if u.ndim == 1 else self.rmatmat(u)

    def __matmul__(self, other: LinearOperator | torch.Tensor) -> LinearOperator | torch.Tensor:
        if isinstance(other, LinearOperator):
            return _ProductOperator(self, other)
        return self.matvec(other)

    # -- algebra ------------------------------------------------------------------------
    def adjoint(self) -> LinearOperator:
        """The transpose ``A^T`` (real operators)."""
        if self.symmetric:
            return self
        if self._rmatmat is None:
            raise NotImplementedError("this operator has no adjoint; pass rmatmat=.")
        return LinearOperator(
            (self.shape[1], self.shape[0]),
            self._rmatmat,
            rmatmat=self._matmat,
            dtype=self.dtype,
            device=self.device,
        )

    @property
    def T(self) -> LinearOperator:
        return self.adjoint()

    def __add__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        if other.shape != self.shape:
            raise ValueError(f"cannot add operators of shapes {self.shape} and {other.shape}.")
        a, b = self, other
        rm = None
        if a._rmatmat is not None and b._rmatmat is not None:
            rm = lambda U: a.rmatmat(U) + b.rmatmat(U)  # noqa: E731
        return LinearOperator(
            self.shape,
            lambda V: a.matmat(V) + b.matmat(V),
            rmatmat=rm,
            dtype=self.dtype,
            device=self.device,
            symmetric=a.symmetric and b.symmetric,
        )

    def __mul__(self, alpha: float) -> LinearOperator:
        if not isinstance(alpha, int | float):
            return NotImplemented
        a = self
        rm = (lambda U: alpha * a.rmatmat(U)) if a._rmatmat is not None else None
        return LinearOperator(
            self.shape,
            lambda V: alpha * a.matmat(V),
            rmatmat=rm,
            dtype=self.dtype,
            device=self.device,
            symmetric=self.symmetric,
        )

    __rmul__ = __mul__

    def shift(self, sigma: float) -> LinearOperator:
        """``A + sigma I`` (square operators), e.g. a ridge-regularised kernel."""
        if self.shape[0] != self.shape[1]:
            raise ValueError(f"shift needs a square operator, got shape {self.shape}.")
        return self + IdentityOperator(self.shape[0], dtype=self.dtype, device=self.device) * sigma

    # -- conversion ---------------------------------------------------------------------
    def to_dense(self, block: int = 256) -> torch.Tensor:
        """Form the ``[m, n]`` matrix, ``block`` columns at a time (small operators only)."""
        n = self.shape[1]
        cols = []
        for start in range(0, n, block):
            stop = min(n, start + block)
            E = torch.zeros(n, stop - start, dtype=self.dtype, device=self.device)
            E[torch.arange(start, stop), torch.arange(stop - start)] = 1
            cols.append(self.matmat(E))
        if not cols:
            return torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        return torch.cat(cols, dim=1)

    def to_scipy(self):  # -> scipy.sparse.linalg.LinearOperator
        """A ``scipy.sparse.linalg.LinearOperator`` on numpy arrays (CPU round trip)."""
        from scipy.sparse.linalg import LinearOperator as ScipyOperator

        np_dtype = torch.empty((), dtype=self.dtype).numpy().dtype

        def _wrap(fn: MatMat) -> Callable[[np.ndarray], np.ndarray]:
            def call(x: np.ndarray) -> np.ndarray:
                X = torch.as_tensor(np.asarray(x), dtype=self.dtype, device=self.device)
                vec = X.ndim == 1
                out = fn(X[:, None] if vec else X)
                out = out.detach().cpu().numpy()
                return out[:, 0] if vec else out

            return call

        mm = _wrap(self.matmat)
        rm = _wrap(self.rmatmat) if self._rmatmat is not None else None
        return ScipyOperator(
            self.shape, matvec=mm, matmat=mm, rmatvec=rm, rmatmat=rm, dtype=np_dtype
        )

    def __repr__(self) -> str:
        sym = ", symmetric" if self.symmetric else ""
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}{sym})"


class _ProductOperator(LinearOperator):
    """Composition ``A B``."""

    def __init__(self, A: LinearOperator, B: LinearOperator) -> None:
        if A.shape[1] != B.shape[0]:
            raise ValueError(f"cannot compose operators of shapes {A.shape} and {B.shape}.")
        rm = None
        if A._rmatmat is not None and B._rmatmat is not None:
            rm = lambda U: B.rmatmat(A.rmatmat(U))  # noqa: E731
        super().__init__(
            (A.shape[0], B.shape[1]),
            lambda V: A.matmat(B.matmat(V)),
            rmatmat=rm,
            dtype=A.dtype,
            device=A.device,
        )


class DenseOperator(LinearOperator):
    """A dense ``[m, n]`` tensor viewed as an operator."""

    def __init__(self, A: torch.Tensor, *, symmetric: bool = False) -> None:
        if A.ndim != 2:
            raise ValueError(f"A must be 2-D, got shape {tuple(A.shape)}.")
        self.A = A
        super().__init__(
            tuple(A.shape),
            lambda V: A @ V,
            rmatmat=lambda U: A.T @ U,
            dtype=A.dtype,
            device=A.device,
            symmetric=symmetric,
        )

    def to_dense(self, block: int = 256) -> torch.Tensor:
        return self.A


class DiagonalOperator(LinearOperator):
    """``diag(d)`` for ``d [n]``."""

    def __init__(self, d: torch.Tensor) -> None:
        if d.ndim != 1:
            raise ValueError(f"d must be 1-D, got shape {tuple(d.shape)}.")
        self.d = d
        super().__init__(
            (d.shape[0], d.shape[0]),
            lambda V: d[:, None] * V,
            dtype=d.dtype,
            device=d.device,
            symmetric=True,
        )

    def to_dense(self, block: int = 256) -> torch.Tensor:
        return torch.diag(self.d)


class IdentityOperator(DiagonalOperator):
    """The ``n x n`` identity."""

    def __init__(
        self, n: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> None:
        super().__init__(torch.ones(n, dtype=dtype or torch.get_default_dtype(), device=device))


def aslinearoperator(
    A: LinearOperator | torch.Tensor | np.ndarray, *, symmetric: bool = False
) -> LinearOperator:
    """Return ``A`` as a :class:`LinearOperator` (dense tensors and arrays are wrapped)."""
    if isinstance(A, LinearOperator):
        return A
    if isinstance(A, np.ndarray):
        A = torch.from_numpy(A)
    if isinstance(A, torch.Tensor):
        return DenseOperator(A, symmetric=symmetric)
    raise TypeError(
        f"expected a LinearOperator, torch.Tensor or numpy array, got {type(A).__name__}."
    )
