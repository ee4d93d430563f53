"""The largest eigenvalue of a loss Hessian with respect to the parameters, by Lanczos on
Hessian-vector products (double backward; no Hessian is formed)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from ..linalg import LinearOperator, lanczos_eigh

__all__ = ["hessian_top_eigenvalue"]


def hessian_top_eigenvalue(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    tol: float = 1e-6,
    max_iter: int = 200,
) -> float:
    """``lambda_max`` of ``d^2 loss_fn(model(x), y) / d theta^2`` over the trainable
    parameters, at the module's current values (the module is not changed)."""
    named = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    names = list(named)
    sizes = [named[n].numel() for n in names]
    leaves = {n: v.clone().requires_grad_(True) for n, v in named.items()}
    with torch.enable_grad():
        loss = loss_fn(functional_call(model, leaves, (x,), strict=False), y)
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True)
    flat_g = torch.cat([g.reshape(-1) for g in grads])
    first = named[names[0]]

    def matmat(V: torch.Tensor) -> torch.Tensor:
        cols = []
        for j in range(V.shape[1]):
            hv = torch.autograd.grad(flat_g, list(leaves.values()), V[:, j], retain_graph=True)
            cols.append(torch.cat([h.reshape(-1) for h in hv]))
        return torch.stack(cols, 1)

    p = sum(sizes)
    op = LinearOperator((p, p), matmat, dtype=first.dtype, device=first.device, symmetric=True)
    evals, _ = lanczos_eigh(op, 1, tol=tol, max_iter=max_iter, warn=False)
    return float(evals[0])
