"""Shared linear algebra: operators, solvers, eigensolvers, trace and rank estimators.

Everything here accepts a dense ``[n, n]`` tensor or a matrix-free :class:`LinearOperator`
(only ``matmat`` is called), works in float32 and float64 on the device of its input, and
takes ``seed=`` (an int or a ``torch.Generator``) wherever randomness is involved.
"""

from ._common import ConvergenceWarning
from .cg import CGResult, Preconditioner, conjugate_gradient
from .cholesky import JitterWarning, cholesky_solve, jittered_cholesky
from .eigenpro import EigenProResult, eigenpro_solve
from .kernel_solve import KernelSolveResult, kernel_operator, solve_kernel_system
from .lanczos import lanczos_eigh
from .operator import (
    DenseOperator,
    DiagonalOperator,
    IdentityOperator,
    LinearOperator,
    aslinearoperator,
)
from .preconditioners import EigenProPreconditioner, LowRankPreconditioner, NystromPreconditioner
from .randomized import randomized_eigh
from .rank import entropy_effective_rank, participation_ratio
from .trace import hutchinson_trace, hutchpp_trace

__all__ = [
    "CGResult",
    "ConvergenceWarning",
    "DenseOperator",
    "DiagonalOperator",
    "EigenProPreconditioner",
    "EigenProResult",
    "IdentityOperator",
    "JitterWarning",
    "KernelSolveResult",
    "LinearOperator",
    "LowRankPreconditioner",
    "NystromPreconditioner",
    "Preconditioner",
    "aslinearoperator",
    "cholesky_solve",
    "conjugate_gradient",
    "eigenpro_solve",
    "entropy_effective_rank",
    "hutchinson_trace",
    "hutchpp_trace",
    "jittered_cholesky",
    "kernel_operator",
    "lanczos_eigh",
    "participation_ratio",
    "randomized_eigh",
    "solve_kernel_system",
]
