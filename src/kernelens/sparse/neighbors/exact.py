"""Exact k-nearest-neighbour search in torch, in tiles under a memory budget."""

from __future__ import annotations

import torch

from ..._memory import element_size, tile_grid
from ..._progress import progress
from .base import NeighborIndex

__all__ = ["TorchExactIndex"]

#: Entries of temporaries held per entry of a distance tile (distances, top-k workspace).
_TILE_TEMPORARIES = 3
#: Queries per tile before the budget is considered (keeps the matmul efficient).
_MAX_QUERY_ROWS = 1024


class TorchExactIndex(NeighborIndex):
    """Brute-force exact search: distances by one matmul per tile (L1: ``torch.cdist``),
    then top-k, in the points' dtype.

    The ``[B, n]`` distance matrix is never formed: queries and points are processed in tiles
    whose distance block (with temporaries) fits ``memory_budget`` bytes, and a running top-k
    is merged across point tiles. The Gram expansion ``|q|^2 + |z|^2 - 2 q.z`` runs on points
    centred on their mean; its candidates are then re-ranked and proven as every exact
    backend's are (:class:`~kernelens.sparse.NeighborIndex`). Cost: ``O(B n p)`` time per
    search, ``O(n p)`` to build (a copy).

    Args:
        memory_budget: bytes a distance tile may use (default: 2 GiB, or $KERNELENS_MEMORY_BUDGET).
        show_progress: force the progress bar over query tiles on or off.
    """

    name = "torch"
    exact = True

    def __init__(
        self, *, memory_budget: int | None = None, show_progress: bool | None = None
    ) -> None:
        super().__init__(memory_budget=memory_budget)
        self.show_progress = show_progress

    def _build(self, points: torch.Tensor) -> None:
        self._centred = points
        self._sqnorms = (points * points).sum(dim=1)

    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        P, p2, Q = self._centred, self._sqnorms, queries
        l1 = self._metric == "l1"
        q2 = (Q * Q).sum(dim=1)
        per_entry = _TILE_TEMPORARIES * element_size(P.dtype)
        rows, cols = tile_grid(
            Q.shape[0], P.shape[0], per_entry, self.memory_budget,
            rows_hint=_MAX_QUERY_ROWS, min_cols=k,
        )  # fmt: skip
        out_d, out_i = [], []
        starts = range(0, Q.shape[0], rows)
        for r0 in progress(starts, desc="exact k-NN", enable=self.show_progress):
            q = Q[r0 : r0 + rows]
            best_d: torch.Tensor | None = None
            best_i: torch.Tensor | None = None
            for c0 in range(0, P.shape[0], cols):
                Pc = P[c0 : c0 + cols]
                if l1:
                    block = torch.cdist(q, Pc, p=1.0)
                else:  # |z|^2 - 2 q.z: the row constant |q|^2 does not change the ranking
                    block = torch.addmm(p2[None, c0 : c0 + cols], q, Pc.T, alpha=-2.0)
                kk = min(k, block.shape[1])
                d, i = torch.topk(block, kk, dim=1, largest=False, sorted=False)
                i = i + c0
                if best_d is not None and best_i is not None:
                    d, i = torch.cat([best_d, d], dim=1), torch.cat([best_i, i], dim=1)
                    d, j = torch.topk(d, k, dim=1, largest=False, sorted=False)
                    i = torch.gather(i, 1, j)
                best_d, best_i = d, i
            assert best_d is not None and best_i is not None
            d, j = torch.sort(best_d, dim=1)
            out_d.append(d if l1 else d + q2[r0 : r0 + rows, None])
            out_i.append(torch.gather(best_i, 1, j))
        return torch.cat(out_d), torch.cat(out_i)
