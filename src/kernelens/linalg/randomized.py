"""Randomized eigendecomposition of a symmetric operator (Halko, Martinsson & Tropp 2011)."""

from __future__ import annotations

import numpy as np
import torch

from .._validation import check_positive_int
from ._common import Seed, as_square_operator, make_generator, orthonormalize, random_block
from .operator import LinearOperator

__all__ = ["randomized_eigh"]


def randomized_eigh(
    A: LinearOperator | torch.Tensor | np.ndarray,
    k: int,
    *,
    oversample: int = 10,
    power_iters: int = 2,
    seed: Seed = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate top-``k`` eigenpairs of a symmetric operator from a random range sketch.

    Draws a Gaussian test block ``Omega [n, k + oversample]``, orthonormalises ``A Omega``,
    refines the basis with ``power_iters`` subspace iterations (re-orthonormalised each time,
    HMT Algorithm 4.4) and solves the small projected problem ``Q^T A Q`` (Rayleigh-Ritz).
    Uses ``power_iters + 2`` block products with ``k + oversample`` columns, and no
    convergence loop: its accuracy depends on the spectrum. The sketch captures the
    eigenvalues largest in *magnitude*; for positive semi-definite operators (kernels, NTKs)
    those are the top ones. Prefer :func:`lanczos_eigh` when a tolerance must be met, and
    this when block products are cheap and a few percent accuracy on a decaying spectrum is
    enough.

    Args:
        A: symmetric ``[n, n]`` tensor or LinearOperator.
        k: eigenpairs wanted, ``1 <= k <= n``.
        oversample: extra sketch columns (``k + oversample`` is capped at ``n``; then the
            result is exact up to round-off).
        power_iters: subspace iterations; each sharpens the basis by a factor
            ``(lambda_{k+p+1} / lambda_i)^2`` (HMT Section 4.5).
        seed: int, torch.Generator or None.

    Returns:
        ``(evals [k] descending, evecs [n, k] orthonormal)``, dtype and device of ``A``.
    """
    op = as_square_operator(A, "A", symmetric=True)
    n = op.shape[0]
    k = check_positive_int(k, "k")
    if k > n:
        raise ValueError(f"k={k} exceeds the operator size n={n}; pass k <= {n}.")
    oversample = check_positive_int(oversample, "oversample", minimum=0)
    power_iters = check_positive_int(power_iters, "power_iters", minimum=0)
    width = min(n, k + oversample)
    gen = make_generator(seed)
    with torch.no_grad():
        Omega = random_block(n, width, dtype=op.dtype, device=op.device, generator=gen)
        Q = orthonormalize(op.matmat(Omega))
        for _ in range(power_iters):
            Q = orthonormalize(op.matmat(Q))
        AQ = op.matmat(Q)
        if not bool(torch.isfinite(AQ).all()):
            raise ValueError("A returned non-finite values; check the operator.")
        T = Q.T @ AQ
        evals, S = torch.linalg.eigh((T + T.T) / 2)
        idx = torch.arange(width - 1, width - 1 - k, -1, device=evals.device)
        return evals[idx], Q @ S[:, idx]
