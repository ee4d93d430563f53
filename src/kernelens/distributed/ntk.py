"""The empirical NTK on a Dask cluster: kernel blocks and matrix-free products as tasks.

Every worker evaluates blocks with :func:`kernelens.empirical_ntk` itself (the one Jacobian
engine), so a distributed kernel is the in-process kernel computed tile by tile.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .._memory import element_size, resolve_memory_budget
from ..linalg.operator import LinearOperator
from ._client import check_client
from ._tasks import SharedData, map_tiles

__all__ = ["DistributedNTKOperator", "distributed_empirical_ntk", "ntk_block_plan"]

#: Examples per block side at least: a block's gradients cost one batched forward/backward,
#: which amortises per-task overhead only from about this many examples on.
_MIN_BLOCK = 256
#: The block plan covers the examples in at most this many blocks per side when the budget
#: allows larger blocks (fewer, larger tasks; the plan still depends on the size only).
_MAX_BLOCKS_PER_SIDE = 64


def _param_names(model: nn.Module, params: Sequence[str | nn.Parameter] | None) -> list[str] | None:
    """``params=`` as names (Parameter objects do not keep their identity across processes)."""
    if params is None:
        return None
    names = {id(p): n for n, p in model.named_parameters()}
    out = []
    for p in params:
        if isinstance(p, str):
            out.append(p)
        elif id(p) in names:
            out.append(names[id(p)])
        else:
            raise ValueError(
                "params contains a Parameter that is not a parameter of model; pass parameter "
                "names or the model's own Parameter objects."
            )
    return out


def ntk_block_plan(n: int, outputs: int, output: str, dtype: torch.dtype, budget: int) -> int:
    """Examples per block side of a distributed NTK: fixed by ``n``, the output size and the
    budget (never by the workers). A block's result ``[b, b, O, O]`` (full) uses at most a
    quarter of the per-worker budget."""
    per_pair = {"full": outputs * outputs, "diagonal": outputs, "trace": 1}[output]
    cap = max(1, int(math.sqrt(budget / 4 / (per_pair * element_size(dtype)))))
    target = max(_MIN_BLOCK, math.ceil(n / _MAX_BLOCKS_PER_SIDE))
    return max(1, min(n, cap, target))


def _ntk_block(
    pair: tuple[slice, slice | None],
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor,
    method: str,
    output: str,
    params: list[str] | None,
    weights: Mapping[str, torch.Tensor] | None,
    budget: int,
) -> torch.Tensor:
    from ..ntk import empirical_ntk

    rows, cols = pair
    return empirical_ntk(
        model,
        x1[rows],
        None if cols is None else x2[cols],
        method=method,
        output=output,
        params=params,
        weights=weights,
        memory_budget=budget,
    )


def _mirror(block: torch.Tensor, output: str) -> torch.Tensor:
    if output == "full":
        return block.permute(1, 0, 3, 2)
    return block.transpose(0, 1)


def distributed_empirical_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None,
    *,
    client: Any,
    outputs: int,
    method: str = "auto",
    output: str = "full",
    params: Sequence[str | nn.Parameter] | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
    memory_budget: int | float | None = None,
    show_progress: bool | None = None,
) -> torch.Tensor:
    """:func:`kernelens.empirical_ntk` with its ``[b, b]`` example blocks computed on the workers.

    The model, ``x1`` and ``x2`` go to every worker once. With ``x2=None`` only the blocks on and
    above the diagonal are computed (diagonal blocks as symmetric kernels) and the rest mirrored,
    as in-process. The block plan (:func:`ntk_block_plan`) depends on the sizes and the
    per-worker ``memory_budget`` only, so the result is bitwise identical for any number of
    workers.

    Args:
        outputs: the model's output size O (known to the caller from its own probe).
        Other arguments: as in :func:`kernelens.empirical_ntk`.
    """
    check_client(client)
    budget = resolve_memory_budget(memory_budget)
    names = _param_names(model, params)
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    dtype = next((p.dtype for p in model.parameters()), torch.get_default_dtype())
    b = ntk_block_plan(max(n1, n2), outputs, output, dtype, budget)
    blocks1 = [slice(s, min(n1, s + b)) for s in range(0, n1, b)]
    blocks2 = blocks1 if x2 is None else [slice(s, min(n2, s + b)) for s in range(0, n2, b)]
    if x2 is None:
        pairs = [
            (r, None if i == j else c)
            for i, r in enumerate(blocks1)
            for j, c in enumerate(blocks2)
            if j >= i
        ]
    else:
        pairs = [(r, c) for r in blocks1 for c in blocks2]
    shared = SharedData(client, model=model, x1=x1, x2=x1 if x2 is None else x2)
    parts = map_tiles(
        client,
        _ntk_block,
        pairs,
        shared,
        shared_names=("model", "x1", "x2"),
        method=method,
        output=output,
        params=names,
        weights=None if weights is None else dict(weights),
        budget=budget,
        desc="NTK blocks (distributed)",
        show_progress=show_progress,
    )
    shape = {"full": (n1, n2, outputs, outputs), "diagonal": (n1, n2, outputs)}.get(
        output, (n1, n2)
    )
    result = torch.empty(shape, dtype=parts[0].dtype)
    for (rows, cols), block in zip(pairs, parts, strict=True):
        if cols is None:
            result[rows, rows] = block
        else:
            result[rows, cols] = block
            if x2 is None:
                result[cols, rows] = _mirror(block, output)
    return result


def _vjp_tile(
    rows: slice,
    model: nn.Module,
    x: torch.Tensor,
    V: torch.Tensor,
    params: list[str] | None,
    weights: Mapping[str, torch.Tensor] | None,
) -> dict[str, torch.Tensor]:
    """``J_rows^T V_rows`` for ``V [N, O, K]``: ``{name: [K, *shape]}``."""
    from ..ntk import vjp

    return vjp(model, x[rows], V[rows], params=params, weights=weights)


def _jvp_tile(
    rows: slice,
    model: nn.Module,
    x: torch.Tensor,
    tangents: Mapping[str, torch.Tensor],
    weights: Mapping[str, torch.Tensor] | None,
) -> torch.Tensor:
    """``J_rows t_k`` for every column k of ``tangents {name: [K, *shape]}`` -> ``[K, n, O]``."""
    from ..ntk import jvp

    k = next(iter(tangents.values())).shape[0]
    cols = [
        jvp(model, x[rows], {n: t[c] for n, t in tangents.items()}, weights=weights)[1]
        for c in range(k)
    ]
    return torch.stack(cols)


class DistributedNTKOperator(LinearOperator):
    """``Theta(x, x)`` as a matrix-free operator whose products run on a Dask cluster.

    A product ``Theta V = J (J^T V)`` is two rounds of tasks over fixed example tiles: the
    per-tile vjps ``J_t^T V_t`` are summed on the client in tile order (so the result does not
    depend on the workers), sent back once, and the per-tile jvps give the rows of the result.
    Bytes moved per product: about ``2 x tiles x K x P`` numbers (P parameters, K columns).

    Args:
        model, x, output, params, weights, memory_budget: as in
            :class:`kernelens.ntk.NTKOperator`.
        outputs: the model's output size O.
        client: a running :class:`distributed.Client`.
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        *,
        client: Any,
        outputs: int,
        output: str = "full",
        params: Sequence[str | nn.Parameter] | None = None,
        weights: Mapping[str, torch.Tensor] | None = None,
        memory_budget: int | float | None = None,
    ) -> None:
        self.client = check_client(client)
        self.output = output
        self.outputs = outputs
        self.n = x.shape[0]
        self.params = _param_names(model, params)
        self.weights = None if weights is None else dict(weights)
        budget = resolve_memory_budget(memory_budget)
        dtype = next((p.dtype for p in model.parameters()), torch.get_default_dtype())
        b = ntk_block_plan(self.n, outputs, "full", dtype, budget)
        self._tiles = [slice(s, min(self.n, s + b)) for s in range(0, self.n, b)]
        self._shared = SharedData(client, model=model, x=x)
        size = self.n * outputs if output == "full" else self.n
        super().__init__((size, size), self._apply, dtype=dtype, symmetric=True)

    def _apply(self, V: torch.Tensor) -> torch.Tensor:
        n, o, k = self.n, self.outputs, V.shape[1]
        V = V.to(self.dtype)
        if self.output == "full":
            cot = V.T.reshape(k, n, o)
        else:  # trace: column j of V placed on every output a, one column per (j, a)
            eye = torch.eye(o, dtype=V.dtype)
            cot = (V.T[:, None, :, None] * eye[None, :, None, :]).reshape(k * o, n, o)
        shared = self._shared
        shared.put("V", cot.permute(1, 2, 0).contiguous())  # [N, O, K']
        grads = map_tiles(
            self.client,
            _vjp_tile,
            self._tiles,
            shared,
            shared_names=("model", "x", "V"),
            params=self.params,
            weights=self.weights,
            desc="NTK vjp (distributed)",
            show_progress=False,
        )
        total = {name: sum(g[name] for g in grads) for name in grads[0]}  # tile order
        shared.put("t", total)
        rows = map_tiles(
            self.client,
            _jvp_tile,
            self._tiles,
            shared,
            shared_names=("model", "x", "t"),
            weights=self.weights,
            desc="NTK jvp (distributed)",
            show_progress=False,
        )
        out = torch.cat(rows, dim=1)  # [K', N, O]
        if self.output == "full":
            return out.reshape(k, n * o).T
        return out.reshape(k, o, n, o).diagonal(dim1=1, dim2=3).sum(-1).T
