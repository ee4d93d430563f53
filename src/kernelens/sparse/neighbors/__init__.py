"""k-nearest-neighbour search backends for Sparse Kernel layers."""

from .base import NeighborIndex, knn_recall
from .exact import TorchExactIndex
from .faiss_backends import FaissFlatIndex, FaissHNSWIndex, import_faiss
from .registry import INDEXES, make_index

__all__ = [
    "INDEXES",
    "FaissFlatIndex",
    "FaissHNSWIndex",
    "NeighborIndex",
    "TorchExactIndex",
    "import_faiss",
    "knn_recall",
    "make_index",
]
