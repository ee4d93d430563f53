"""Differentiable parameter-direction Jacobian-vector products, for linearised models.

:func:`linear_jvp` returns ``(f(x; theta0), J(x; theta0) t)`` with autograd flowing into the
tangent ``t`` (so ``f0 + J (theta - theta0)`` can be trained by any optimiser) and never into
``theta0``. It is one forward-mode pass (torch.func.jvp) per call; no Jacobian is formed. Where
an op has no forward-mode rule, the same product is taken as ``d/du <J^T u, t>`` (two reverse
passes, graph kept so the result stays differentiable in ``t``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call
from torch.func import jvp as func_jvp

from ._autodiff import _TRANSFORM_ERRORS, _is_unsupported, math_attention

__all__ = ["linear_jvp"]


def linear_jvp(
    model: nn.Module,
    x: torch.Tensor,
    primals: Mapping[str, torch.Tensor],
    tangents: Mapping[str, torch.Tensor],
    *,
    overrides: Mapping[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f(x) [N, ...], J t [N, ...])`` at parameters ``primals`` (detached) along
    ``tangents`` (same names and shapes; may require grad). The output keeps the model's shape.

    Args:
        model: the module, called with ``torch.func.functional_call``.
        x: a batch of inputs.
        primals: name -> value of the parameters to differentiate.
        tangents: name -> direction, one per name of ``primals``.
        overrides: other parameters / buffers to call the model with (name -> tensor).
    """
    base = {n: v.detach() for n, v in primals.items()}
    fixed = {} if overrides is None else {n: v.detach() for n, v in overrides.items()}
    names = list(base)
    tan = {n: tangents[n].to(base[n].dtype) for n in names}

    def f(sub: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(model, {**fixed, **sub}, (x,), strict=False)

    with math_attention():
        try:
            y, jt = func_jvp(f, (base,), (tan,))
            return y.detach(), jt
        except _TRANSFORM_ERRORS as exc:
            if not _is_unsupported(exc):
                raise
        return _by_double_backward(f, base, tan)


def _by_double_backward(f, base, tan):
    leaves = {n: v.clone().requires_grad_(True) for n, v in base.items()}
    with torch.enable_grad():
        y = f(leaves)
        u = torch.zeros_like(y, requires_grad=True)
        g = torch.autograd.grad(y, list(leaves.values()), u, create_graph=True, allow_unused=True)
        s = sum((gi * tan[n]).sum() for n, gi in zip(leaves, g) if gi is not None)
        if not isinstance(s, torch.Tensor):
            return y.detach(), torch.zeros_like(y)
        (jt,) = torch.autograd.grad(s, u, create_graph=True, allow_unused=True)
    return y.detach(), jt if jt is not None else torch.zeros_like(y)
