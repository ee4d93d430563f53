"""GP-style predictive variance with a path kernel as covariance (the EPK paper's appendix A.6).

The exact representation pairs path-averaged test gradients with training gradients at the
start of each step, so its Gram over the training points is not symmetric and cannot be a
covariance. We use the symmetric path kernel

    k(x, x') = sum_s sum_g lr_{s,g} int_0^1 <grad_g f(x; w_s(t)), grad_g f(x'; w_s(t))> dt

(``g`` the parameter groups), a sum of Gram matrices and hence positive semi-definite; it agrees
with the exact kernel to first order in the step size. Outputs are jointly modelled: the
covariance of ``f_a(x)`` and ``f_b(x')`` is ``k(x, x')[a, b]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .._memory import element_size, tile_size
from .._progress import progress
from .._validation import check_nonnegative
from ..linalg import jittered_cholesky
from ..ntk import contract
from .quadrature import rule_nodes

if TYPE_CHECKING:
    from .kernel import ExactPathKernel

__all__ = ["path_gp_variance", "symmetric_path_kernel"]


def symmetric_path_kernel(
    epk: ExactPathKernel,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    nodes: int = 2,
    diagonal: bool = False,
) -> torch.Tensor:
    """``k(x1, x2)`` as ``[N1, O, N2, O]`` (``x2=None``: ``x1`` with itself), or with
    ``diagonal=True`` the per-point blocks ``k(x1[i], x1[i])`` as ``[N1, O, O]``.

    Gauss-Legendre with ``nodes`` points per step (the integrand is smooth in ``t`` for smooth
    activations; this is a covariance, not an exact identity).
    """
    traj = epk.trajectory
    names, group_of = traj.param_names, traj.header.group_of
    n1, o = x1.shape[0], traj.num_outputs
    out = (
        torch.zeros(n1, o, o, dtype=epk.dtype)
        if diagonal
        else torch.zeros(n1, o, (n1 if x2 is None else x2.shape[0]), o, dtype=epk.dtype)
    )
    w0 = epk._weights(0)
    for s in progress(range(traj.num_steps), desc="epk gp kernel", enable=epk.show_progress):
        w1 = epk._weights(s + 1)
        lrs = {k: float(traj.step(s).hyper[group_of[k]]["lr"]) for k in names}
        uniform = len(set(lrs.values())) == 1
        for t, q in rule_nodes("gauss-legendre", nodes):
            w = {k: w0[k] + t * (w1[k] - w0[k]) for k in names}
            f1 = epk._factors(epk._view, x1, w)
            f2 = f1 if x2 is None else epk._factors(epk._view, x2, w)
            if uniform:
                gram = contract(f1, f2) * (q * next(iter(lrs.values())))
            else:
                scaled = epk._factors(epk._view, x1, w).scale_({k: q * v for k, v in lrs.items()})
                gram = contract(scaled, f2)
            if diagonal:
                ar = torch.arange(n1)
                out += gram[ar, :, ar, :]
            else:
                out += gram
        w0 = w1
    return out


def path_gp_variance(
    epk: ExactPathKernel,
    x_test: Any,
    *,
    train_indices: Any = None,
    noise: float | None = None,
    nodes: int = 2,
) -> torch.Tensor:
    """Posterior variance ``[T, O]`` of a zero-mean GP with the symmetric path kernel,
    conditioned on the training inputs (noise-free targets plus ``noise`` on the diagonal).

    Args:
        epk: the kernel (its output view and compute dtype are used).
        x_test: ``[T, ...]`` test inputs.
        train_indices: training-example indices to condition on (default: every example that
            appeared in a batch). The Gram is ``[M O, M O]``: pick a subset for large ``M``.
        noise: observation-noise variance added to the Gram's diagonal; None for
            ``1e-6 x`` its mean diagonal (the Gram of log-probabilities is singular, since
            probabilities sum to one).
        nodes: Gauss-Legendre nodes per step.
    """
    x = epk._check_x(x_test)
    idx, X = epk.trajectory.training_examples()
    if train_indices is not None:
        want = torch.as_tensor(train_indices, dtype=torch.int64).reshape(-1)
        pos = {int(i): j for j, i in enumerate(idx.tolist())}
        missing = [int(i) for i in want.tolist() if int(i) not in pos]
        if missing:
            raise ValueError(
                f"train_indices {missing[:5]} never appeared in a training batch, so they are "
                "not in the trajectory; pick indices of recorded examples."
            )
        X = X[[pos[int(i)] for i in want.tolist()]]
    X = X.to(epk.dtype) if X.is_floating_point() else X
    m, o = X.shape[0], epk.trajectory.num_outputs
    K = symmetric_path_kernel(epk, X, nodes=nodes).reshape(m * o, m * o)
    K = 0.5 * (K + K.T)
    if noise is None:
        noise = 1e-6 * float(K.diagonal().mean())
    noise = check_nonnegative(noise, "noise")
    L, _ = jittered_cholesky(K + noise * torch.eye(m * o, dtype=K.dtype))
    rows = tile_size(x.shape[0], 4 * m * o * o * element_size(epk.dtype), epk.memory_budget)
    out = []
    for k in range(0, x.shape[0], rows):
        xt = x[k : k + rows]
        kxX = symmetric_path_kernel(epk, xt, X, nodes=nodes)  # [t, O, M, O]
        kxx = symmetric_path_kernel(epk, xt, nodes=nodes, diagonal=True)  # [t, O, O]
        B = torch.linalg.solve_triangular(L, kxX.reshape(-1, m * o).T, upper=False)
        reduction = (B * B).sum(0).reshape(xt.shape[0], o)
        out.append((kxx.diagonal(dim1=1, dim2=2) - reduction).clamp_min(0.0))
    return torch.cat(out)
