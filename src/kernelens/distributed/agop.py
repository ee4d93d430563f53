"""The average gradient outer product of a kernel machine with its gradient tiles on a cluster."""

from __future__ import annotations

from typing import Any

import torch

from ._client import check_client
from ._tasks import SharedData, map_tiles

__all__ = ["distributed_agop_sums"]


def _agop_tile(
    rows: slice, machine: Any, U: torch.Tensor, diagonal: bool, budget: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum g g^T or sum g * g, sum g)`` over the gradients ``[b, c, r]`` of rows ``rows``."""
    G = machine.u_gradients(U[rows], memory_budget=budget)
    flat = G.reshape(-1, G.shape[-1])
    outer = (flat * flat).sum(dim=0) if diagonal else flat.T @ flat
    return outer, G.sum(dim=0)


def distributed_agop_sums(
    machine: Any,
    U: torch.Tensor,
    rows: int,
    *,
    diagonal: bool,
    memory_budget: int | None,
    client: Any,
    show_progress: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sums behind an AGOP, from tiles of ``rows`` points of ``U [m, r]`` on the workers.

    The machine (its centres and coefficients) and ``U`` go to every worker once; the partial
    sums come back and are added in tile order, as the in-process accumulation does.

    Returns:
        ``(total, grad_sum)``: ``sum g g^T [r, r]`` (``[r]`` when ``diagonal``) and the
        gradient sums ``[c, r]`` (see :func:`kernelens.rfm.agop.machine_agop`).
    """
    check_client(client)
    m = U.shape[0]
    shared = SharedData(client, machine=machine, U=U)
    parts = map_tiles(
        client,
        _agop_tile,
        [slice(i, min(m, i + rows)) for i in range(0, m, rows)],
        shared,
        shared_names=("machine", "U"),
        diagonal=diagonal,
        budget=memory_budget,
        desc="AGOP (distributed)",
        show_progress=show_progress,
    )
    total: torch.Tensor | float = 0.0
    grad_sum: torch.Tensor | float = 0.0
    for outer, gsum in parts:
        total = total + outer
        grad_sum = grad_sum + gsum
    return torch.as_tensor(total), torch.as_tensor(grad_sum)
