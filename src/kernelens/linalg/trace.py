"""Stochastic trace estimators: Hutchinson and Hutch++ (Meyer, Musco, Musco & Woodruff 2021)."""

from __future__ import annotations

import numpy as np
import torch

from .._validation import check_positive_int
from ._common import Seed, as_square_operator, make_generator, orthonormalize, random_block
from .operator import LinearOperator

__all__ = ["hutchinson_trace", "hutchpp_trace"]


def _quadratic_forms(
    op: LinearOperator, G: torch.Tensor, block_size: int, *, project: torch.Tensor | None = None
) -> torch.Tensor:
    """``g_j^T P A P g_j`` for every column of ``G`` -> ``[m]``, ``block_size`` columns at a
    time, with ``P = I - Q Q^T`` when ``project`` is the orthonormal ``Q`` (else ``P = I``)."""
    parts = []
    for start in range(0, G.shape[1], block_size):
        Z = G[:, start : start + block_size]
        if project is not None:
            Z = Z - project @ (project.T @ Z)
        parts.append((Z * op.matmat(Z)).sum(dim=0))
    values = torch.cat(parts) if parts else torch.zeros(0, dtype=op.dtype, device=op.device)
    if not bool(torch.isfinite(values).all()):
        raise ValueError("A returned non-finite values; check the operator.")
    return values


def _quadratic_form_sum(
    op: LinearOperator, G: torch.Tensor, block_size: int, *, project: torch.Tensor | None = None
) -> torch.Tensor:
    """``sum_j g_j^T P A P g_j`` over the columns of ``G`` (see :func:`_quadratic_forms`)."""
    return _quadratic_forms(op, G, block_size, project=project).sum()


def hutchinson_trace(
    A: LinearOperator | torch.Tensor | np.ndarray,
    num_samples: int,
    *,
    seed: Seed = 0,
    block_size: int = 256,
) -> torch.Tensor:
    """Hutchinson's estimate ``(1/m) sum_j z_j^T A z_j`` of ``tr(A)``, Rademacher ``z_j``.

    Unbiased for any square ``A``; for symmetric ``A`` its variance is
    ``2 (||A||_F^2 - sum_i A_ii^2) / m``, so the error decays like ``1/sqrt(m)``.

    Args:
        A: square ``[n, n]`` tensor or LinearOperator (symmetry is not required).
        num_samples: probe vectors (= matvecs) ``m >= 1``.
        seed: int, torch.Generator or None.
        block_size: probes per ``A.matmat`` call (memory: ``n x block_size``).

    Returns:
        0-d tensor in the dtype of ``A``.
    """
    op = as_square_operator(A, "A", symmetric=False)
    m = check_positive_int(num_samples, "num_samples")
    block_size = check_positive_int(block_size, "block_size")
    gen = make_generator(seed)
    with torch.no_grad():
        Z = random_block(
            op.shape[0], m, dtype=op.dtype, device=op.device, generator=gen, kind="rademacher"
        )
        return _quadratic_form_sum(op, Z, block_size) / m


def hutchpp_trace(
    A: LinearOperator | torch.Tensor | np.ndarray,
    num_matvecs: int,
    *,
    seed: Seed = 0,
    block_size: int = 256,
    return_stderr: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Hutch++ estimate of ``tr(A)`` for symmetric ``A`` using ``num_matvecs`` products.

    A third of the budget sketches the dominant range ``Q = orth(A S)``, a third computes
    ``tr(Q^T A Q)`` exactly, and the rest runs Hutchinson on the deflated
    ``(I - Q Q^T) A (I - Q Q^T)``. For PSD ``A`` the error is ``O(1/m)`` instead of
    Hutchinson's ``O(1/sqrt(m))``, a large gain when the spectrum decays (kernels, NTKs).

    Args:
        A: symmetric ``[n, n]`` tensor or LinearOperator.
        num_matvecs: total products ``m >= 3``: ``m // 3`` sketch columns, as many for the
            exact part, the remaining ``m - 2 (m // 3)`` Hutchinson probes.
        seed: int, torch.Generator or None.
        block_size: probes per ``A.matmat`` call in the Hutchinson part.
        return_stderr: also return the standard error of the estimate: the sample standard
            deviation of the Hutchinson probes over ``sqrt(probes)`` (the sketched part is exact;
            inf with a single probe).

    Returns:
        0-d tensor in the dtype of ``A``; with ``return_stderr``, ``(estimate, stderr)``.
    """
    op = as_square_operator(A, "A", symmetric=True)
    m = check_positive_int(num_matvecs, "num_matvecs", minimum=3)
    block_size = check_positive_int(block_size, "block_size")
    n = op.shape[0]
    sketch = m // 3
    probes = m - 2 * sketch
    gen = make_generator(seed)
    kw = {"dtype": op.dtype, "device": op.device, "generator": gen, "kind": "rademacher"}
    with torch.no_grad():
        S = random_block(n, sketch, **kw)
        G = random_block(n, probes, **kw)
        Q = orthonormalize(op.matmat(S))
        exact = _quadratic_form_sum(op, Q, max(1, Q.shape[1]))
        values = _quadratic_forms(op, G, block_size, project=Q)
        estimate = exact + values.sum() / probes
        if not return_stderr:
            return estimate
        spread = values.std() / probes**0.5 if probes > 1 else torch.tensor(float("inf"))
        return estimate, spread.to(estimate.dtype)
