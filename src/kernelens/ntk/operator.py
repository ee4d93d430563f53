"""The NTK of a model on a set of inputs as a matrix-free symmetric LinearOperator."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .._memory import element_size, resolve_memory_budget, tile_size
from .._validation import check_choice
from ..linalg import LinearOperator
from ._autodiff import jvp_products, vjp_products
from ._model import ModelCall, check_input
from ._plan import make_plan
from .engine import _extract_all
from .factors import Factors, dense_dot

__all__ = ["NTKOperator"]


class NTKOperator(LinearOperator):
    """``Theta(x, x)`` applied to vectors without forming it.

    ``output="full"``: the ``[N*O, N*O]`` matrix with entry ``(i*O + a, j*O + b)`` equal to
    ``Theta[i, j, a, b]``; ``output="trace"``: the ``[N, N]`` matrix ``sum_a Theta[i, j, a, a]``.

    A product ``Theta V`` is ``J (J^T V)``. With ``backend="factors"`` the per-layer factors
    of J are computed once (one hooked forward + backward, see :func:`jacobian_factors`) and
    each product costs two passes over them (``Factors.combine`` then ``dense_dot``); with
    ``backend="ntvp"`` each product is one vjp and one jvp of the model (no storage beyond
    the parameters). ``"auto"`` uses the factors when they fit in ``memory_budget``.

    Args:
        model: ``nn.Module`` mapping ``[N, ...]`` to ``[N, O]`` (see :func:`empirical_ntk`).
        x: inputs ``[N, ...]``.
        output: ``"full"`` or ``"trace"``.
        params, weights, memory_budget: as in :func:`empirical_ntk`.
        backend: ``"auto"``, ``"factors"`` or ``"ntvp"``.
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        *,
        output: str = "full",
        params: Sequence[str | nn.Parameter] | None = None,
        weights: Mapping[str, torch.Tensor] | None = None,
        memory_budget: int | float | None = None,
        backend: str = "auto",
    ) -> None:
        check_choice(output, "output", ("full", "trace"))
        check_choice(backend, "backend", ("auto", "factors", "ntvp"))
        self.call = ModelCall(model, params=params, weights=weights)
        self.x = check_input(x, "x")
        self.output = output
        self.budget = resolve_memory_budget(memory_budget)
        with torch.no_grad():
            self.outputs = self.call(self.x[:1], where="x").shape[1]
        self.n = self.x.shape[0]
        es = element_size(self.call.dtype)
        self.num_params = sum(math.prod(s) for s in self.call.shapes.values())
        self.factors: Factors | None = None
        if backend != "ntvp":
            plan = make_plan(
                self.call,
                self.x,
                None,
                method="structured",
                output="full",
                memory_budget=self.budget,
            )
            fits = plan.example_bytes * self.n <= self.budget / 2
            if backend == "factors" or fits:
                self.factors = _extract_all(plan, self.x, None, self.budget, "x", "NTK factors")
        self.backend = "factors" if self.factors is not None else "ntvp"
        self._col_bytes = es * (2 * self.num_params + 4 * self.n * self.outputs) + 1
        size = self.n * self.outputs if output == "full" else self.n
        super().__init__(
            (size, size),
            self._apply,
            dtype=self.call.dtype,
            device=self.call.device,
            symmetric=True,
        )

    def _apply_full(self, V: torch.Tensor) -> torch.Tensor:
        """``Theta V`` for ``V [K, N, O]`` -> ``[K, N, O]``."""
        if self.factors is not None:
            return dense_dot(self.factors.combine(V), self.factors)
        _, tangents = vjp_products(self.call, self.x, V, where="x")
        _, jv = jvp_products(self.call, self.x, tangents, where="x", batched=True)
        return jv

    def _apply(self, V: torch.Tensor) -> torch.Tensor:
        n, o = self.n, self.outputs
        k = V.shape[1]
        V = V.to(self.call.dtype)
        if self.output == "full":
            blocks = V.T.reshape(k, n, o)
        else:  # trace: one block column per output a, V placed on output a
            eye = torch.eye(o, dtype=V.dtype, device=V.device)
            blocks = (V.T[:, None, :, None] * eye[None, :, None, :]).reshape(k * o, n, o)
        step = tile_size(blocks.shape[0], self._col_bytes, self.budget)
        outs = [self._apply_full(blocks[s : s + step]) for s in range(0, blocks.shape[0], step)]
        out = torch.cat(outs)
        if self.output == "full":
            return out.reshape(k, n * o).T
        out = out.reshape(k, o, n, o).diagonal(dim1=1, dim2=3).sum(-1)  # [K, N]
        return out.T

    def __repr__(self) -> str:
        return (
            f"NTKOperator(shape={self.shape}, output={self.output!r}, backend={self.backend!r}, "
            f"dtype={self.dtype})"
        )
