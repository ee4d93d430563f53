"""Kernel Grams applied to vectors on a Dask cluster: a matrix-free operator whose row tiles are
tasks."""

from __future__ import annotations

import math
from typing import Any

import torch

from .._memory import resolve_memory_budget
from ..linalg.operator import LinearOperator
from ._client import check_client
from ._tasks import SharedData, map_tiles

__all__ = ["DistributedKernelOperator", "row_tiles"]

#: Gram entries one task should cover at least, so that scheduling overhead (1-10 ms per task
#: measured on a local cluster) stays small against the work (about 40 ms per million entries
#: at d = 32 on one core).
_MIN_TASK_ENTRIES = 1 << 22
#: At most this many row tiles per product, so that the scheduler's per-task cost stays
#: bounded for huge n (the plan then scales to about this many workers).
_MAX_TILES = 1024


def row_tiles(n_rows: int, n_cols: int) -> list[slice]:
    """The fixed tile plan of a distributed kernel product: row blocks of ``K [n_rows, n_cols]``.

    It depends only on the shape, never on the number of workers, so the result of a product is
    bitwise identical whatever the cluster.
    """
    rows = max(math.ceil(_MIN_TASK_ENTRIES / max(1, n_cols)), math.ceil(n_rows / _MAX_TILES))
    rows = max(1, min(n_rows, rows))
    return [slice(s, min(n_rows, s + rows)) for s in range(0, n_rows, rows)]


def _row_block_product(
    rows: slice, kernel: Any, X1: torch.Tensor, X2: torch.Tensor, V: torch.Tensor, budget: int
) -> torch.Tensor:
    """``K(X1[rows], X2) @ V`` on a worker, tiled under the worker's ``budget``."""
    return kernel.matvec(X1[rows], X2, V, memory_budget=budget, show_progress=False)


def _column_block_product(
    tile: tuple[slice, torch.Tensor],
    kernel: Any,
    X1: torch.Tensor,
    X2: torch.Tensor,
    rows: torch.Tensor,
    budget: int,
) -> torch.Tensor:
    """``K(X1[rows], X2[cols]) @ V_cols`` on a worker, for ``tile = (cols, V_cols)``."""
    cols, V_cols = tile
    return kernel.matvec(X1[rows], X2[cols], V_cols, memory_budget=budget, show_progress=False)


class DistributedKernelOperator(LinearOperator):
    """``K(X1, X2)`` as a :class:`LinearOperator` whose products run on a Dask cluster.

    ``X1`` and ``X2`` (and the kernel) are sent to every worker once, at construction. Each
    product sends ``V`` once (broadcast) and runs one task per row block of the fixed plan
    :func:`row_tiles`; blocks are concatenated in plan order.

    Args:
        kernel: a :class:`kernelens.kernels.Kernel`.
        X1: ``[N1, d]``; X2: ``[N2, d]`` or None for X1 (then the operator is symmetric).
        client: a running :class:`distributed.Client`.
        memory_budget: bytes per worker process for Gram tiles.
        show_progress: progress bar over finished tiles (default: on a terminal).
    """

    def __init__(
        self,
        kernel: Any,
        X1: torch.Tensor,
        X2: torch.Tensor | None,
        *,
        client: Any,
        memory_budget: int | float | None = None,
        show_progress: bool | None = False,
    ) -> None:
        self.client = check_client(client)
        self.kernel = kernel
        self.budget = resolve_memory_budget(memory_budget)
        self.show_progress = show_progress
        Xb = X1 if X2 is None else X2
        self._shared = SharedData(client, kernel=kernel, X1=X1, X2=Xb)
        self._rows = row_tiles(X1.shape[0], Xb.shape[0])
        self._cols = row_tiles(Xb.shape[0], X1.shape[0])
        super().__init__(
            (X1.shape[0], Xb.shape[0]),
            self._product,
            rmatmat=None if X2 is None else self._adjoint_product,
            dtype=X1.dtype,
            device=X1.device,
            symmetric=X2 is None,
        )

    def _run(self, tiles: list[slice], left: str, right: str, V: torch.Tensor) -> torch.Tensor:
        shared = self._shared
        shared.put("V", V)
        parts = map_tiles(
            self.client,
            _row_block_product,
            tiles,
            shared,
            shared_names=("kernel", left, right, "V"),
            budget=self.budget,
            desc=f"{getattr(self.kernel, 'name', 'kernel')} matvec (distributed)",
            show_progress=self.show_progress,
        )
        return torch.cat(parts, dim=0)

    def rows_product(self, rows: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """``K(X1[rows], X2) @ V`` for index ``rows [m]`` and ``V [N2, c]`` -> ``[m, c]``.

        For mini-batch solvers (EigenPro): the column blocks of the fixed plan run as tasks,
        each receiving only its slice of ``V``; the partial products are summed in plan order.
        """
        tiles = self._cols
        parts = map_tiles(
            self.client,
            _column_block_product,
            [(c, V[c]) for c in tiles],
            self._shared,
            shared_names=("kernel", "X1", "X2"),
            rows=rows,
            budget=self.budget,
            desc="kernel rows (distributed)",
            show_progress=False,
        )
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total

    def _product(self, V: torch.Tensor) -> torch.Tensor:
        return self._run(self._rows, "X1", "X2", V)

    def _adjoint_product(self, U: torch.Tensor) -> torch.Tensor:
        return self._run(self._cols, "X2", "X1", U)
