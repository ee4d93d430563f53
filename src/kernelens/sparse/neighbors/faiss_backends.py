"""faiss-cpu search backends: exact ``IndexFlatL2`` and approximate ``IndexHNSWFlat``.

faiss is an optional dependency (the ``fast`` extra: ``pip install 'kernelens[fast]'``); it
is imported when an index is built, never when kernelens is imported. faiss computes in
float32, so float64 points are rounded for the search only: its candidates are re-ranked by
the reference distances in the points' dtype (see :class:`~kernelens.sparse.NeighborIndex`),
and the kernel computations of a layer stay in the layer's dtype.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np
import torch

from ..._validation import check_positive_int
from .base import NeighborIndex

__all__ = ["FaissFlatIndex", "FaissHNSWIndex", "import_faiss"]


def import_faiss() -> ModuleType:
    """Import faiss, or raise ImportError saying how to install it."""
    try:
        return importlib.import_module("faiss")
    except ImportError as exc:
        raise ImportError(
            "this neighbour index needs faiss, which is not installed; install the optional "
            "extra with `pip install 'kernelens[fast]'` (or `pip install faiss-cpu`), or use "
            "index='torch' (exact search in torch, no extra dependency)."
        ) from exc


def _as_faiss(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)


def _faiss_metric(faiss: ModuleType, metric: str) -> int:
    return int(faiss.METRIC_L1 if metric == "l1" else faiss.METRIC_L2)


class _FaissIndex(NeighborIndex):
    """Shared by the faiss backends: float32 arithmetic, search of centred points."""

    def backend_eps(self, dtype: torch.dtype) -> float:
        return float(np.finfo(np.float32).eps)

    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        D, I = self._index.search(_as_faiss(queries), k)
        return torch.from_numpy(D).to(queries.device), torch.from_numpy(I).to(queries.device)


class FaissFlatIndex(_FaissIndex):
    """Exact search with faiss ``IndexFlat`` (``IndexFlatL2``, or L1; brute force,
    multi-threaded, float32).

    Args:
        memory_budget: bytes for the re-ranking and the exact scans (see
            :class:`~kernelens.sparse.NeighborIndex`).

    Build costs one float32 copy of the points; search is ``O(B n p)`` like
    :class:`TorchExactIndex` but with faiss's blocked kernels. Its candidates are re-ranked and
    proven as every exact backend's are, so it returns the same neighbours as
    :class:`TorchExactIndex`, to the bit.
    """

    name = "faiss"
    exact = True

    def _build(self, points: torch.Tensor) -> None:
        faiss = import_faiss()
        index = faiss.IndexFlat(points.shape[1], _faiss_metric(faiss, self._metric))
        index.add(_as_faiss(points))
        self._index = index


class FaissHNSWIndex(_FaissIndex):
    """Approximate search with faiss ``IndexHNSWFlat`` (a hierarchical navigable small-world
    graph): search time grows roughly logarithmically in ``n`` instead of linearly.

    Results are approximate: measure recall with :func:`~kernelens.sparse.knn_recall` against
    an exact index (benchmarks/sparse.py reports it). Raising ``ef_search`` raises recall and
    search time. Building costs ``O(n log n)`` graph insertions, far more than a flat index:
    avoid HNSW when centers or features are learned (the index is rebuilt after every change).
    The graph's ``k + extra`` candidates are re-ranked by the reference distances, ties by the
    lowest index among them; rows for which the graph returns fewer than ``k`` neighbours are
    answered by an exact scan.

    Args:
        m: graph degree (faiss ``M``); memory grows with it.
        ef_construction: candidate-list size while building.
        ef_search: candidate-list size while searching (at least ``k + extra`` is used).
        memory_budget: bytes for the re-ranking and the exact scans (see
            :class:`~kernelens.sparse.NeighborIndex`).
    """

    name = "hnsw"
    exact = False

    def __init__(
        self,
        *,
        m: int = 32,
        ef_construction: int = 40,
        ef_search: int = 64,
        memory_budget: int | None = None,
    ) -> None:
        super().__init__(memory_budget=memory_budget)
        self.m = check_positive_int(m, "m", minimum=2)
        self.ef_construction = check_positive_int(ef_construction, "ef_construction")
        self.ef_search = check_positive_int(ef_search, "ef_search")

    def _build(self, points: torch.Tensor) -> None:
        faiss = import_faiss()
        index = faiss.IndexHNSWFlat(points.shape[1], self.m, _faiss_metric(faiss, self._metric))
        index.hnsw.efConstruction = self.ef_construction
        index.add(_as_faiss(points))
        self._index = index

    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._index.hnsw.efSearch = max(self.ef_search, k)
        return super()._search(queries, k)

    def __repr__(self) -> str:
        return (
            f"FaissHNSWIndex(m={self.m}, ef_construction={self.ef_construction}, "
            f"ef_search={self.ef_search}, " + super().__repr__().split("(", 1)[1]
        )
