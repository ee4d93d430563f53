"""Sparse Kernel layers: differentiable local kernel ridge regression for deep pipelines.

:class:`SparseKernelLayer` answers each query by kernel ridge regression on its ``k`` nearest
centers; its three parameter sets (features, targets, centers) can each be fixed or learned.
Neighbours are searched in the kernel's own metric (:mod:`kernelens.sparse.metric`) by one
rule for every backend (:mod:`kernelens.sparse.neighbors`).
"""

from ..kernels.batched import batched_gram, batched_squared_distances
from .bandwidth import median_neighbor_distance
from .layer import SparseKernelLayer
from .local import local_kernel_regression
from .neighbors import (
    INDEXES,
    FaissFlatIndex,
    FaissHNSWIndex,
    NeighborIndex,
    TorchExactIndex,
    import_faiss,
    knn_recall,
    make_index,
)

__all__ = [
    "INDEXES",
    "FaissFlatIndex",
    "FaissHNSWIndex",
    "NeighborIndex",
    "SparseKernelLayer",
    "TorchExactIndex",
    "batched_gram",
    "batched_squared_distances",
    "import_faiss",
    "knn_recall",
    "local_kernel_regression",
    "make_index",
    "median_neighbor_distance",
]
