"""Neighbour indexes by name."""

from __future__ import annotations

from typing import Any

from ..._validation import check_choice
from .base import NeighborIndex
from .exact import TorchExactIndex
from .faiss_backends import FaissFlatIndex, FaissHNSWIndex

__all__ = ["INDEXES", "make_index"]

#: name -> index class; "auto" is the exact torch search.
INDEXES: dict[str, type[NeighborIndex]] = {
    "torch": TorchExactIndex,
    "faiss": FaissFlatIndex,
    "hnsw": FaissHNSWIndex,
}


def make_index(index: str | NeighborIndex = "auto", **params: Any) -> NeighborIndex:
    """A fresh neighbour index.

    Args:
        index: ``"auto"`` or ``"torch"`` (exact search in torch tiles, no extra dependency),
            ``"faiss"`` (exact, faiss ``IndexFlatL2``), ``"hnsw"`` (approximate, faiss
            ``IndexHNSWFlat``), or a :class:`NeighborIndex` instance (returned as is).
        params: constructor arguments of the named backend (e.g. ``memory_budget=`` for
            torch, ``ef_search=`` for hnsw).
    """
    if isinstance(index, NeighborIndex):
        if params:
            raise ValueError("index is already a NeighborIndex; do not pass parameters too.")
        return index
    if not isinstance(index, str):
        raise TypeError(f"index must be a name or a NeighborIndex, got {type(index).__name__}.")
    name = check_choice(index, "index", ["auto", *INDEXES])
    return INDEXES["torch" if name == "auto" else name](**params)
