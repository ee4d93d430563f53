"""Comparing kernels: the (centred-free) kernel alignment of two symmetric operators."""

from __future__ import annotations

import torch

from .._validation import check_positive_int
from ..linalg import LinearOperator, aslinearoperator, hutchpp_trace
from ..linalg._common import Seed, make_generator

__all__ = ["alignment"]


def _frobenius_inner(A: LinearOperator, B: LinearOperator, m: int, gen) -> torch.Tensor:
    """``tr(A B)`` of symmetric A, B as the Hutch++ trace of the symmetric ``(AB + BA) / 2``."""
    sym = LinearOperator(
        A.shape,
        lambda V: (A.matmat(B.matmat(V)) + B.matmat(A.matmat(V))) / 2,
        symmetric=True,
        dtype=A.dtype,
        device=A.device,
    )
    return hutchpp_trace(sym, m, seed=gen)


def alignment(
    A: LinearOperator | torch.Tensor,
    B: LinearOperator | torch.Tensor,
    *,
    num_matvecs: int = 99,
    seed: Seed = 0,
) -> torch.Tensor:
    """Kernel alignment ``<A, B>_F / (||A||_F ||B||_F) = tr(AB) / sqrt(tr(A^2) tr(B^2))``.

    1 when ``B`` is a positive multiple of ``A``, 0 when their ranges are orthogonal; e.g. ``K``
    against ``NTK_S``, or ``NTK_S`` at initialisation against after training.

    Args:
        A, B: symmetric ``[n, n]`` tensors or LinearOperators of one shape.
        num_matvecs: Hutch++ budget per trace for operators. When ``3 num_matvecs >= n`` (or
            both are dense tensors) the operators are formed and the alignment is exact.
        seed: randomness of the estimate.

    Returns:
        0-d tensor.
    """
    m = check_positive_int(num_matvecs, "num_matvecs", minimum=3)
    opA, opB = aslinearoperator(A, symmetric=True), aslinearoperator(B, symmetric=True)
    if opA.shape != opB.shape or opA.shape[0] != opA.shape[1]:
        raise ValueError(
            f"A and B must be square operators of one shape, got {opA.shape} and {opB.shape}."
        )
    dense = isinstance(A, torch.Tensor) and isinstance(B, torch.Tensor)
    if dense or 3 * m >= opA.shape[0]:
        Ad, Bd = opA.to_dense(), opB.to_dense().to(opA.dtype)
        num, da, db = (Ad * Bd).sum(), (Ad * Ad).sum(), (Bd * Bd).sum()
    else:
        gen = make_generator(seed)
        num = _frobenius_inner(opA, opB, m, gen)
        da = _frobenius_inner(opA, opA, m, gen)
        db = _frobenius_inner(opB, opB, m, gen)
    if float(da) <= 0 or float(db) <= 0:
        raise ValueError("alignment is undefined for a zero operator (||A||_F or ||B||_F is 0).")
    return num / torch.sqrt(da * db)
