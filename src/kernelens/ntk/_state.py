"""State-direction products for the global NTK: ``jvp`` and ``vjp`` of a function of several
tensors (hidden states, inputs, parameter dictionaries), vmapped over a block of directions.

These are the per-step state Jacobian products of :mod:`kernelens.gntk` (``A_t v = d f/d h v``
and ``A_t^T w``) and the immediate parameter products of its ``K`` operator. They use the same
machinery as the parameter-direction products of :mod:`kernelens.ntk._autodiff` (torch.func,
the decomposed attention kernel, and the reverse-mode fallbacks where an op has no forward-mode
or batching rule), so a speed-up there speeds up both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.func import jvp as func_jvp
from torch.func import vjp as func_vjp
from torch.func import vmap
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from ._autodiff import _TRANSFORM_ERRORS, _is_unsupported, math_attention

__all__ = ["state_jvp", "state_vjp"]


def _index(tree: Any, i: int) -> Any:
    return tree_map(lambda t: t[i], tree)


def _first_dim(tree: Any) -> int:
    leaves, _ = tree_flatten(tree)
    return int(leaves[0].shape[0])


def state_jvp(
    fn: Callable[..., torch.Tensor],
    primals: tuple[Any, ...],
    tangents: tuple[Any, ...],
) -> torch.Tensor:
    """``[k, *out]``: ``d fn(*primals) [tangents_j]`` for every direction ``j`` of a block.

    Args:
        fn: a function of ``len(primals)`` arguments (tensors or dicts of tensors) returning
            one tensor.
        primals: the point of linearisation.
        tangents: like ``primals`` with a leading block axis ``k`` on every tensor.

    Forward-mode AD vmapped over ``k``; where an op has no forward-mode or batching rule,
    a loop of reverse-mode double-backward products (exact, slower).
    """
    with math_attention():
        try:
            return vmap(lambda *t: func_jvp(fn, primals, t)[1])(*tangents)
        except _TRANSFORM_ERRORS as exc:
            if not _is_unsupported(exc):
                raise
        k = _first_dim(tangents)
        return torch.stack([_jvp_by_vjp(fn, primals, _index(tangents, j)) for j in range(k)])


def _jvp_by_vjp(fn, primals, tangent) -> torch.Tensor:
    """``J t`` as ``d/du <J^T u, t>`` (reverse mode twice), for ops without forward-mode AD."""
    leaves, spec = tree_flatten(primals)
    leaves = [v.detach().requires_grad_(True) for v in leaves]
    tan_leaves, _ = tree_flatten(tangent)
    with torch.enable_grad():
        y = fn(*tree_unflatten(leaves, spec))
        u = torch.zeros_like(y, requires_grad=True)
        g = torch.autograd.grad(y, leaves, u, create_graph=True, allow_unused=True)
        s = sum((gi * ti).sum() for gi, ti in zip(g, tan_leaves) if gi is not None)
        if not isinstance(s, torch.Tensor) or not s.requires_grad:
            return torch.zeros_like(y).detach()
        (jv,) = torch.autograd.grad(s, u, allow_unused=True)
    return (jv if jv is not None else torch.zeros_like(y)).detach()


def state_vjp(
    fn: Callable[..., torch.Tensor],
    primals: tuple[Any, ...],
    cotangents: torch.Tensor,
) -> tuple[Any, ...]:
    """``J^T c_j`` for every cotangent ``c_j`` of a block ``cotangents [k, *out]``: a tuple
    like ``primals`` with a leading axis ``k`` on every tensor (one vmapped backward pass;
    a loop of backward passes where an op has no batching rule)."""
    with math_attention():
        _, pullback = func_vjp(fn, *primals)
        try:
            return vmap(pullback)(cotangents)
        except _TRANSFORM_ERRORS as exc:
            if not _is_unsupported(exc):
                raise
        cols = [pullback(cotangents[j]) for j in range(cotangents.shape[0])]
    return tree_map(lambda *xs: torch.stack(xs), *cols)
