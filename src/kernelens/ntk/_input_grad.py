"""Gradients of a model's outputs with respect to its inputs (saliency), per example.

Because examples are independent (checked by :class:`ModelCall`), the gradient of
``sum_i f_a(x_i)`` with respect to the batch ``x`` holds every example's own input gradient;
one vmapped backward pass over the O outputs gives them all.
"""

from __future__ import annotations

import torch
from torch import nn

from ._autodiff import batched_grad
from ._model import ModelCall, check_input

__all__ = ["input_gradients"]


def input_gradients(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``d f_a(x_i) / d x_i`` as ``[N, O, *x.shape[1:]]`` (float inputs only), at the module's
    current parameters; the module itself is not changed."""
    x = check_input(x, "x")
    if not x.is_floating_point():
        raise TypeError(
            f"x has dtype {x.dtype}; input gradients need floating inputs (token ids have none)."
        )
    call = ModelCall(model)
    leaf = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = call(leaf, where="x")  # [N, O]
        o = y.shape[1]
        basis = torch.eye(o, dtype=y.dtype, device=y.device)[:, None, :].expand(o, *y.shape)
        (g,) = batched_grad(y, [leaf], basis.contiguous())
    if g is None:
        return torch.zeros(x.shape[0], o, *x.shape[1:], dtype=x.dtype, device=x.device)
    return g.transpose(0, 1).contiguous()
