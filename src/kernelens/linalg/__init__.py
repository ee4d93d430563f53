"""Shared linear algebra: operators, solvers, eigensolvers, trace and rank estimators."""

from .cholesky import JitterWarning, cholesky_solve, jittered_cholesky
from .operator import (
    DenseOperator,
    DiagonalOperator,
    IdentityOperator,
    LinearOperator,
    aslinearoperator,
)

__all__ = [
    "DenseOperator",
    "DiagonalOperator",
    "IdentityOperator",
    "JitterWarning",
    "LinearOperator",
    "aslinearoperator",
    "cholesky_solve",
    "jittered_cholesky",
]
