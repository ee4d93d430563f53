"""Cholesky factorisation and solves with automatic jitter, batched."""

from __future__ import annotations

import warnings

import torch

__all__ = ["JitterWarning", "cholesky_solve", "jittered_cholesky"]


class JitterWarning(UserWarning):
    """A matrix was not numerically positive definite; jitter was added to its diagonal."""


def jittered_cholesky(
    A: torch.Tensor,
    *,
    jitter: float | None = None,
    max_tries: int = 8,
    warn: bool = True,
) -> tuple[torch.Tensor, float]:
    """Lower Cholesky factor of symmetric ``A [..., n, n]``, adding jitter if needed.

    Tries ``A`` first; on failure adds ``eps * mean(diag(A)) * 10^i`` to the diagonal for
    ``i = 0 .. max_tries - 1`` (``eps`` the dtype's machine epsilon, starting value
    overridable with ``jitter``) and warns with the jitter that worked.

    Returns:
        ``(L, jitter_used)`` with ``L L^T = A + jitter_used I``.
    """
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"A must be [..., n, n], got shape {tuple(A.shape)}.")
    L, info = torch.linalg.cholesky_ex(A)
    if not bool((info != 0).any()):
        return L, 0.0
    diag_mean = float(A.diagonal(dim1=-2, dim2=-1).abs().mean().detach())
    scale = diag_mean if diag_mean > 0 else 1.0
    start = jitter if jitter is not None else torch.finfo(A.dtype).eps * scale * 10
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    value = start
    for _ in range(max_tries):
        L, info = torch.linalg.cholesky_ex(A + value * eye)
        if not bool((info != 0).any()):
            if warn:
                warnings.warn(
                    f"matrix not numerically positive definite; added jitter {value:.3g} "
                    f"({value / scale:.3g} x mean diagonal) to its diagonal.",
                    JitterWarning,
                    stacklevel=2,
                )
            return L, value
        value *= 10.0
    raise torch.linalg.LinAlgError(
        f"Cholesky failed even with jitter {value / 10:.3g} on the diagonal; the matrix is far "
        "from positive definite (check for NaN, a non-symmetric input or a negative "
        "regularisation)."
    )


def _is_vector_batch(b_shape: torch.Size, a_shape: torch.Size) -> bool:
    if b_shape[-1] != a_shape[-1]:
        return False
    try:
        torch.broadcast_shapes(b_shape[:-1], a_shape[:-2])
    except RuntimeError:
        return False
    return True


def cholesky_solve(
    A: torch.Tensor,
    B: torch.Tensor,
    *,
    jitter: float | None = None,
    warn: bool = True,
) -> torch.Tensor:
    """Solve ``A X = B`` for symmetric positive (semi-)definite ``A``, batched.

    Args:
        A: ``[..., n, n]``.
        B: ``[..., n]`` or ``[..., n, k]`` (batch dimensions broadcast). ``B`` is read as
            a batch of vectors when it is 1-D or has one dimension less than ``A`` with
            batch dimensions that broadcast against ``A``'s, as a block of columns otherwise.
        jitter: first jitter to try if ``A`` is not numerically PD (see
            :func:`jittered_cholesky`).
        warn: warn when jitter was needed.

    Returns:
        ``X`` with the shape of ``B``. Differentiable with respect to ``A`` and ``B``.
    """
    L, _ = jittered_cholesky(A, jitter=jitter, warn=warn)
    vec = B.ndim == 1 or (B.ndim == A.ndim - 1 and _is_vector_batch(B.shape, A.shape))
    Bm = B.unsqueeze(-1) if vec else B
    if Bm.shape[-2] != A.shape[-1]:
        raise ValueError(
            f"B has {Bm.shape[-2]} rows but A is {A.shape[-1]} x {A.shape[-1]}; they must match."
        )
    X = torch.cholesky_solve(Bm, L)
    return X.squeeze(-1) if vec else X
