"""The average gradient outer product (AGOP) of a predictor over a set of points.

``AGOP(f, X) = (1/m) sum_{x in X} sum_j grad f_j(x) grad f_j(x)^T``  ``[d, d]``.

Radhakrishnan et al. (Science 2024) show that the first-layer Gram ``W^T W`` of a trained
network tracks the AGOP of the network (the Neural Feature Ansatz), and Recursive Feature
Machines learn a kernel metric by iterating ``M <- AGOP(f_M, X)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .._progress import progress
from .._validation import as_tensor, check_positive_int
from ._agop_gram import gram_route_agop, gram_route_cost, gram_route_fits
from .machine import KernelMachine

__all__ = ["agop"]


def _as_machine(predictor: Any) -> KernelMachine | None:
    if isinstance(predictor, KernelMachine):
        return predictor
    if isinstance(predictor, BaseEstimator):
        check_is_fitted(predictor)
        machine = getattr(predictor, "machine_", None)
        if isinstance(machine, KernelMachine):
            return machine
        if hasattr(predictor, "kernel_") and hasattr(predictor, "X_fit_"):
            return KernelMachine.from_kernel_ridge(predictor)
        raise TypeError(
            f"agop does not know the gradients of {type(predictor).__name__}; pass a fitted "
            "RFM or KernelRidge estimator, a KernelMachine, or a differentiable callable."
        )
    return None


def _autograd_gradients(
    fn: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor
) -> torch.Tensor:
    """Per-row input gradients of every output of ``fn``: ``X [b, d]`` -> ``[b, c, d]``."""
    Xg = X.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = fn(Xg)
        if not isinstance(out, torch.Tensor) or out.ndim not in (1, 2) or out.shape[0] != len(X):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"predictor must map X [b, d] to a tensor [b] or [b, c]; got {shape} for "
                f"b = {len(X)}."
            )
        out2 = out[:, None] if out.ndim == 1 else out
        grads = []
        for j in range(out2.shape[1]):
            (g,) = torch.autograd.grad(
                out2[:, j].sum(), Xg, retain_graph=j + 1 < out2.shape[1], allow_unused=True
            )
            grads.append(torch.zeros_like(Xg) if g is None else g)
    return torch.stack(grads, dim=1).detach()


def agop(
    predictor: Any,
    X: Any,
    *,
    centering: bool = False,
    diagonal: bool = False,
    memory_budget: int | None = None,
    batch_size: int = 256,
    show_progress: bool | None = None,
) -> torch.Tensor:
    """Average gradient outer product of ``predictor`` over the rows of ``X``.

    Args:
        predictor: a fitted :class:`RFMRegressor` / :class:`RFMClassifier`, a fitted
            :class:`kernelens.kernels.KernelRidge` / ``KernelClassifier`` with a Laplace,
            Gaussian or product-Laplace kernel (plain or Mahalanobis), a
            :class:`KernelMachine`, or any differentiable callable (e.g. a
            ``torch.nn.Module`` in eval mode) mapping ``[b, d]`` to ``[b]`` or ``[b, c]``
            row by row. Kernel machines use closed-form gradients computed in tiles;
            callables use autograd in batches of ``batch_size``.
        X: points ``[m, d]`` (numpy or torch).
        centering: subtract each output's mean gradient first, i.e. return the summed
            covariance of the gradients instead of their second moment.
        diagonal: return only the diagonal ``[d]``.
        memory_budget: bytes for the gradient tiles of kernel machines.
        batch_size: rows per autograd batch for callables.
        show_progress: progress bar over tiles (default: on a terminal).

    Returns:
        ``[d, d]`` (or ``[d]`` with ``diagonal=True``), symmetric positive semi-definite.

    At a training point ``x_i`` the Laplace kernel ``exp(-||x - x_i||_M / L)`` is not
    differentiable; as in the RFM literature its own term is left out (gradient 0 at the
    apex of the cone), see :mod:`kernelens.rfm._gradients`.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    machine = _as_machine(predictor)
    if machine is None:
        if not callable(predictor):
            raise TypeError(
                f"predictor must be a fitted kernel estimator, a KernelMachine or a callable, "
                f"got {type(predictor).__name__}."
            )
        Xt = as_tensor(X, "X", ndim=2)
        return _accumulate(
            (Xt[i : i + batch_size] for i in range(0, len(Xt), batch_size)),
            lambda Xb: _autograd_gradients(predictor, Xb),
            len(Xt),
            total=-(-len(Xt) // batch_size),
            centering=centering,
            diagonal=diagonal,
            pull_back=None,
            show_progress=show_progress,
        )
    Xt = machine._inputs(X)
    return machine_agop(
        machine,
        machine.factor.apply(Xt),
        centering=centering,
        diagonal=diagonal,
        memory_budget=memory_budget,
        show_progress=show_progress,
    )


def machine_agop(
    machine: KernelMachine,
    U: torch.Tensor,
    *,
    centering: bool = False,
    diagonal: bool = False,
    weights: torch.Tensor | None = None,
    memory_budget: int | None = None,
    show_progress: bool | None = None,
    client: Any = None,
) -> torch.Tensor:
    """AGOP of a kernel machine at the mapped points ``U = X S [m, r]`` -> ``[d, d]`` or
    ``[d]``: accumulated in ``u`` coordinates, mapped back with ``S (.) S^T``. ``weights``
    are ``w(U, centres) [m, n]`` when the caller has them (Laplace and Gaussian machines;
    see :mod:`kernelens.rfm._gradients`), which saves recomputing the distances.

    Two exact routes: the gradients in tiles (cost ``~ m n c r + m c r^2``), or, for Laplace
    and Gaussian machines with many outputs ``c`` and many coordinates ``r``, the "Gram
    route" of :mod:`kernelens.rfm._agop_gram` (``~ m n^2 + n^2 r + (m + n) r^2``), whichever
    is cheaper and fits the memory budget. With a Dask ``client`` the gradient tiles run on its
    workers (:func:`kernelens.distributed.distributed_agop_sums`) and their sums are added in
    tile order.
    """
    m = U.shape[0]
    n, c = machine.coef.shape
    r = machine.factor.rank
    factor = machine.factor
    diag_only = diagonal and factor.index is not None

    def pull_back(G: torch.Tensor) -> torch.Tensor:
        if diag_only:
            return factor.pull_back_diagonal(G)
        full = factor.pull_back(G)
        return full.diagonal().clone() if diagonal else full

    if client is not None:
        from ..distributed import distributed_agop_sums

        rows = machine.gradient_tile_rows(m, memory_budget)
        total, grad_sum = distributed_agop_sums(
            machine, U, rows, diagonal=diag_only, memory_budget=memory_budget, client=client
        )
        return pull_back(_finish(total, grad_sum, m, centering=centering, diagonal=diag_only))

    direct, gram = gram_route_cost(m, n, c, r)
    if (
        machine.kernel in ("laplace", "gaussian")
        and gram < direct
        and gram_route_fits(n, U.dtype, memory_budget)
    ):
        total, grad_sum = gram_route_agop(
            machine.kernel,
            machine.bandwidth,
            U,
            machine.centres,
            machine.coef,
            diagonal=diag_only,
            weights=weights,
            memory_budget=memory_budget,
        )
        return pull_back(_finish(total, grad_sum, m, centering=centering, diagonal=diag_only))

    rows = machine.gradient_tile_rows(m, memory_budget)

    def tile_gradients(i: int) -> torch.Tensor:
        W = None if weights is None else weights[i : i + rows]
        return machine.u_gradients(U[i : i + rows], weights=W, memory_budget=memory_budget)

    return _accumulate(
        range(0, m, rows),
        tile_gradients,
        m,
        total=-(-m // rows),
        centering=centering,
        diagonal=diag_only,
        pull_back=pull_back,
        show_progress=show_progress,
    )


def _finish(
    total: torch.Tensor, grad_sum: torch.Tensor, m: int, *, centering: bool, diagonal: bool
) -> torch.Tensor:
    """Mean outer product from the sum ``total`` of ``g g^T`` (or ``g * g``) and the gradient
    sums ``[c, r]``; centred on the mean gradient of each output when ``centering``."""
    acc = total / m
    if centering:
        mean = grad_sum / m
        acc = acc - ((mean * mean).sum(dim=0) if diagonal else mean.T @ mean)
    return acc


def _accumulate(
    batches: Iterable[Any],
    gradients: Callable[[Any], torch.Tensor],
    m: int,
    *,
    total: int,
    centering: bool,
    diagonal: bool,
    pull_back: Callable[[torch.Tensor], torch.Tensor] | None,
    show_progress: bool | None,
) -> torch.Tensor:
    """Mean of ``g g^T`` (or ``g * g`` when ``diagonal``) over the ``m`` rows' gradients
    ``[b, c, r]`` of every batch, summed over outputs."""
    acc: torch.Tensor | float = 0.0
    grad_sum: torch.Tensor | float = 0.0
    for Xb in progress(batches, total=total, desc="AGOP", enable=show_progress):
        G = gradients(Xb)  # [b, c, r]
        flat = G.reshape(-1, G.shape[-1])
        acc = acc + ((flat * flat).sum(dim=0) if diagonal else flat.T @ flat)
        grad_sum = grad_sum + G.sum(dim=0)  # [c, r]
    out = _finish(
        torch.as_tensor(acc), torch.as_tensor(grad_sum), m, centering=centering, diagonal=diagonal
    )
    if pull_back is not None:
        return pull_back(out)
    return out if diagonal else (out + out.T) / 2
