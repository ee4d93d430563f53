"""GP-style predictive variance with a path kernel as covariance (the EPK paper's appendix A.6).

The exact representation pairs path-averaged test gradients with training gradients at the
start of each step, so its Gram over the training points is not symmetric and cannot be a
covariance. We use the symmetric path kernel

    k(x, x') = sum_s sum_g lr_{s,g} int_0^1 <grad_g f(x; w_s(t)), grad_g f(x'; w_s(t))> dt

(``g`` the parameter groups), a sum of Gram matrices and hence positive semi-definite; it agrees
with the exact kernel to first order in the step size. Each output ``o`` is an independent GP
with the scalar kernel ``k(x, x')[o, o]`` (the diagonal blocks; the joint ``[M O, M O]`` model
would cost ``O^2`` times more), as usual for NTK-GPs.
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
    self_only: bool = False,
) -> torch.Tensor:
    """Per-output kernels ``k(x1[i], x2[j])[o, o]`` as ``[N1, N2, O]`` (``x2=None``: ``x1``
    with itself), or with ``self_only=True`` the variances ``k(x1[i], x1[i])[o, o]`` as
    ``[N1, O]`` (from the ``[N1, N1, O]`` block of each node, so keep ``x1`` to a tile).

    Gauss-Legendre with ``nodes`` points per step (the integrand is smooth in ``t`` for smooth
    activations; this is a covariance, not an exact identity).
    """
    traj = epk.trajectory
    names, group_of = traj.param_names, traj.header.group_of
    n1, o = x1.shape[0], traj.num_outputs
    n2 = n1 if x2 is None else x2.shape[0]
    out = (
        torch.zeros(n1, o, dtype=epk.dtype)
        if self_only
        else torch.zeros(n1, n2, o, dtype=epk.dtype)
    )
    path = epk.path
    w0 = path.weights(0)
    for s in progress(range(traj.num_steps), desc="epk gp kernel", enable=epk.show_progress):
        w1 = path.weights(s + 1)
        lrs = {k: float(traj.step(s).hyper[group_of[k]]["lr"]) for k in names}
        uniform = len(set(lrs.values())) == 1
        for t, q in rule_nodes("gauss-legendre", nodes):
            w = {k: w0[k] + t * (w1[k] - w0[k]) for k in names}
            f1 = path.factors(x1, w)
            f2 = f1 if x2 is None or self_only else path.factors(x2, w)
            if uniform:
                gram = contract(f1, f2, output="diagonal") * (q * next(iter(lrs.values())))
            else:
                scaled = path.factors(x1, w).scale_({k: q * v for k, v in lrs.items()})
                gram = contract(scaled, f2, output="diagonal")
            if self_only:
                out += gram.diagonal(dim1=0, dim2=1).T
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
    """Posterior variance ``[T, O]`` of zero-mean GPs (one per output) with the symmetric path
    kernel, conditioned on the training inputs (``noise`` added to the Gram's diagonal).

    Args:
        epk: the kernel (its output view and compute dtype are used).
        x_test: ``[T, ...]`` test inputs.
        train_indices: training-example indices to condition on (default: every example that
            appeared in a batch). Each output's Gram is ``[M, M]``.
        noise: observation-noise variance; None for ``1e-6 x`` the mean of each Gram's
            diagonal.
        nodes: Gauss-Legendre nodes per step.
    """
    x = epk.path.check_x(x_test)
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
    if noise is not None:
        noise = check_nonnegative(noise, "noise")
    X = X.to(epk.dtype) if X.is_floating_point() else X
    m = X.shape[0]
    K = symmetric_path_kernel(epk, X, nodes=nodes).permute(2, 0, 1)  # [O, M, M]
    K = 0.5 * (K + K.transpose(1, 2))
    eye = torch.eye(m, dtype=K.dtype)
    level = (
        K.diagonal(dim1=1, dim2=2).mean(1) * 1e-6
        if noise is None
        else torch.full((K.shape[0],), noise, dtype=K.dtype)
    )
    L, _ = jittered_cholesky(K + level[:, None, None] * eye)
    rows = tile_size(x.shape[0], 4 * m * K.shape[0] * element_size(epk.dtype), epk.memory_budget)
    out = []
    for k in range(0, x.shape[0], rows):
        xt = x[k : k + rows]
        kxX = symmetric_path_kernel(epk, xt, X, nodes=nodes).permute(2, 1, 0)  # [O, M, t]
        kxx = symmetric_path_kernel(epk, xt, nodes=nodes, self_only=True)  # [t, O]
        B = torch.linalg.solve_triangular(L, kxX, upper=False)  # [O, M, t]
        out.append((kxx - (B * B).sum(1).T).clamp_min(0.0))
    return torch.cat(out)
