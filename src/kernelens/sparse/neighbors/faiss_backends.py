"""faiss-cpu search backends: exact ``IndexFlatL2`` and approximate ``IndexHNSWFlat``.

faiss is an optional dependency (the ``fast`` extra: ``pip install 'kernelens[fast]'``); it
is imported when an index is built, never when kernelens is imported. faiss computes in
float32, so float64 points are rounded for the search only (the kernel computations of a
layer stay in the layer's dtype).
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np
import torch

from ..._validation import check_positive_int
from .base import NeighborIndex
from .exact import TorchExactIndex

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


class FaissFlatIndex(NeighborIndex):
    """Exact search with faiss ``IndexFlatL2`` (brute force, multi-threaded, float32).

    Build costs one float32 copy of the points; search is ``O(B n p)`` like
    :class:`TorchExactIndex` but with faiss's blocked kernels.
    """

    name = "faiss"
    exact = True

    def _build(self, points: torch.Tensor) -> None:
        faiss = import_faiss()
        index = faiss.IndexFlatL2(points.shape[1])
        index.add(_as_faiss(points))
        self._index = index

    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        D, I = self._index.search(_as_faiss(queries), k)
        return torch.from_numpy(D).to(queries.device), torch.from_numpy(I).to(queries.device)


class FaissHNSWIndex(NeighborIndex):
    """Approximate search with faiss ``IndexHNSWFlat`` (a hierarchical navigable small-world
    graph): search time grows roughly logarithmically in ``n`` instead of linearly.

    Results are approximate: measure recall with :func:`~kernelens.sparse.knn_recall` against
    an exact index (benchmarks/sparse.py reports it). Raising ``ef_search`` raises recall and
    search time. Building costs ``O(n log n)`` graph insertions, far more than a flat index:
    avoid HNSW when centers or features are learned (the index is rebuilt after every change).
    Rows for which the graph returns fewer than ``k`` neighbours are completed by exact search.

    Args:
        m: graph degree (faiss ``M``); memory grows with it.
        ef_construction: candidate-list size while building.
        ef_search: candidate-list size while searching (at least ``k`` is used).
    """

    name = "hnsw"
    exact = False

    def __init__(self, *, m: int = 32, ef_construction: int = 40, ef_search: int = 64) -> None:
        super().__init__()
        self.m = check_positive_int(m, "m", minimum=2)
        self.ef_construction = check_positive_int(ef_construction, "ef_construction")
        self.ef_search = check_positive_int(ef_search, "ef_search")

    def _build(self, points: torch.Tensor) -> None:
        faiss = import_faiss()
        index = faiss.IndexHNSWFlat(points.shape[1], self.m)
        index.hnsw.efConstruction = self.ef_construction
        index.add(_as_faiss(points))
        self._index = index
        self._points = points

    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._index.hnsw.efSearch = max(self.ef_search, k)
        D, I = self._index.search(_as_faiss(queries), k)
        d2 = torch.from_numpy(D).to(queries.device)
        idx = torch.from_numpy(I).to(queries.device)
        missing = (idx < 0).any(dim=1)
        if bool(missing.any()):
            exact = TorchExactIndex().build(self._points)
            d2[missing], idx[missing] = exact.search(queries[missing], k)
        return d2, idx

    def __repr__(self) -> str:
        return (
            f"FaissHNSWIndex(m={self.m}, ef_construction={self.ef_construction}, "
            f"ef_search={self.ef_search}, " + super().__repr__().split("(", 1)[1]
        )
