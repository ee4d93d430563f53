"""The NTK of a model on a set of inputs as a matrix-free symmetric LinearOperator."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import torch
from torch import nn

from .._memory import element_size, resolve_memory_budget, tile_size
from .._validation import check_choice
from ..linalg import LinearOperator
from ._autodiff import jvp_rows, ntvp_products, ntvp_tiles, per_example_grads
from ._model import ModelCall, check_input
from ._plan import make_plan, probe_structure
from .engine import _extract_all
from .factors import Factors, contract, dense_dot

__all__ = ["BACKENDS", "OPERATOR_OUTPUTS", "Backend", "NTKOperator", "OperatorOutput"]

Backend = Literal["auto", "factors", "ntvp"]
BACKENDS: tuple[str, ...] = get_args(Backend)
OperatorOutput = Literal["full", "trace"]
OPERATOR_OUTPUTS: tuple[str, ...] = get_args(OperatorOutput)


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
        client: a :class:`distributed.Client`: each product runs on its workers
            (:class:`kernelens.distributed.DistributedNTKOperator`; ``backend`` is then
            ``"distributed"``). None computes in-process.
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        *,
        output: OperatorOutput = "full",
        params: Sequence[str | nn.Parameter] | None = None,
        weights: Mapping[str, torch.Tensor] | None = None,
        memory_budget: int | float | None = None,
        backend: Backend = "auto",
        client: Any = None,
    ) -> None:
        check_choice(output, "output", OPERATOR_OUTPUTS)
        check_choice(backend, "backend", BACKENDS)
        self.call = ModelCall(model, params=params, weights=weights)
        self.x = check_input(x, "x")
        self.output = output
        self.budget = resolve_memory_budget(memory_budget)
        method = "jacobian" if backend == "ntvp" else "structured"
        st = probe_structure(self.call, self.x, None, method=method, where="x")
        self.outputs = st.outputs
        self.n = self.x.shape[0]
        self.num_params = sum(math.prod(s) for s in self.call.shapes.values())
        self.factors: Factors | None = None
        self._kept_bytes = 0.0
        self._remote: LinearOperator | None = None
        if client is not None:
            from ..distributed import DistributedNTKOperator

            self._remote = DistributedNTKOperator(
                model,
                self.x,
                client=client,
                outputs=self.outputs,
                output=output,
                params=params,
                weights=weights,
                memory_budget=self.budget,
            )
        elif backend != "ntvp":
            plan = make_plan(
                self.call,
                self.x,
                None,
                method="structured",
                output="full",
                memory_budget=self.budget,
                where="x",
                structure=st,
            )
            kept = plan.example_bytes * self.n
            if backend == "factors" or kept + plan.extract_bytes <= self.budget / 2:
                room = max(self.budget / 2 - kept, plan.extract_bytes)
                self.factors = _extract_all(plan, self.x, None, room, "x", "NTK factors")
                self._kept_bytes = kept
        self.backend = (
            "distributed"
            if self._remote is not None
            else ("factors" if self.factors is not None else "ntvp")
        )
        self._tiles = ntvp_tiles(
            self.call,
            self.num_params,
            st.observation,
            self.budget,
            columns=self.n * self.outputs,
            n_in=self.n,
            n_out=self.n,
        )
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
        tangents = ntvp_products(self.call, self.x, V, self._tiles, where_in="x")
        out = V.new_empty(V.shape)
        for rows, jv in jvp_rows(self.call, self.x, tangents, self._tiles, where_out="x"):
            out[:, rows] = jv
        return out

    def _apply(self, V: torch.Tensor) -> torch.Tensor:
        if self._remote is not None:
            return self._remote.matmat(V)
        n, o = self.n, self.outputs
        k = V.shape[1]
        V = V.to(self.call.dtype)
        if self.output == "full":
            blocks = V.T.reshape(k, n, o)
        else:  # trace: one block column per output a, V placed on output a
            eye = torch.eye(o, dtype=V.dtype, device=V.device)
            blocks = (V.T[:, None, :, None] * eye[None, :, None, :]).reshape(k * o, n, o)
        if self.factors is not None:  # a block of V costs its combine and its product
            col = 4 * element_size(self.dtype) * (self.num_params + self.n * self.outputs) + 1
            step = tile_size(blocks.shape[0], col, max(1, self.budget - self._kept_bytes))
        else:
            step = self._tiles.columns
        outs = [self._apply_full(blocks[s : s + step]) for s in range(0, blocks.shape[0], step)]
        out = torch.cat(outs)
        if self.output == "full":
            return out.reshape(k, n * o).T
        out = out.reshape(k, o, n, o).diagonal(dim1=1, dim2=3).sum(-1)  # [K, N]
        return out.T

    def self_kernels(self) -> torch.Tensor:
        """The exact self-kernels ``Theta[i, i, a, a]`` as ``[N, O]``, without forming the
        operator: from the factors (chunks of examples), or with the ntvp backend from
        per-example gradients (one example and a block of output columns at a time, within
        ``memory_budget``)."""
        n, o = self.n, self.outputs
        es = element_size(self.call.dtype)
        out = torch.empty(n, o, dtype=self.call.dtype, device=self.call.device)
        if self.factors is not None:
            b = max(1, min(64, int((self.budget / (4 * es * o)) ** 0.5)))
            for start in range(0, n, b):
                fc = self.factors.rows(slice(start, start + b))
                out[start : start + b] = contract(fc, fc, output="diagonal").diagonal().T
            return out
        k = tile_size(o, 3 * es * self.num_params + 1, self.budget)
        eye = torch.eye(o, dtype=self.call.dtype, device=self.call.device)
        for i in range(n):
            for c in range(0, o, k):
                cot = eye[:, c : c + k][None]  # [1, O, k]
                _, J = per_example_grads(
                    self.call, self.call.names, self.x[i : i + 1], cot, where="x"
                )
                out[i, c : c + k] = (J[0] ** 2).sum(-1)
        return out

    def diagonal(self) -> torch.Tensor:
        """The exact diagonal ``[n]`` of the operator (row ``i*O + a`` for ``"full"``,
        ``sum_a Theta[i, i, a, a]`` for ``"trace"``); its sum is the exact trace."""
        d = self.self_kernels()
        return d.reshape(-1) if self.output == "full" else d.sum(1)

    def __repr__(self) -> str:
        return (
            f"NTKOperator(shape={self.shape}, output={self.output!r}, backend={self.backend!r}, "
            f"dtype={self.dtype})"
        )
