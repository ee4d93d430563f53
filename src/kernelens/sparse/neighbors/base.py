"""The neighbour-index interface shared by every search backend, and a recall measure.

An index is built once on points ``[n, p]`` and answers k-nearest-neighbour queries in the
squared Euclidean distance. Indexes hold derived data only: they are never part of a layer's
``state_dict`` and are rebuilt from the points when those change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..._validation import as_tensor, check_positive_int

__all__ = ["NeighborIndex", "knn_recall"]


class NeighborIndex(ABC):
    """k-nearest-neighbour search in squared Euclidean distance.

    Subclasses implement :meth:`_build` and :meth:`_search`; the public methods validate the
    input and the state. ``exact`` says whether results are exact (up to floating-point
    rounding of near ties) or approximate. Convention: configuration lives in public
    attributes, built data in private (``_``-prefixed) ones; copies and pickles keep the
    configuration only (an index is derived data, rebuilt where it is used).
    """

    #: Backend name as accepted by :func:`~kernelens.sparse.make_index`.
    name: str = "index"
    #: Whether :meth:`search` returns the exact nearest neighbours.
    exact: bool = True

    def __init__(self) -> None:
        self._n: int | None = None
        self._dim: int | None = None

    @property
    def is_built(self) -> bool:
        """Whether :meth:`build` has been called."""
        return self._n is not None

    @property
    def n_points(self) -> int:
        """Number of indexed points (raises if the index is not built)."""
        self._require_built()
        assert self._n is not None
        return self._n

    def build(self, points: torch.Tensor) -> NeighborIndex:
        """Index ``points [n, p]`` (replacing whatever was indexed before); returns ``self``."""
        points = as_tensor(points, "points", ndim=2)
        self._build(points.detach())
        self._n, self._dim = points.shape
        return self

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` nearest indexed points of each query.

        Args:
            queries: ``[B, p]``.
            k: number of neighbours, ``1 <= k <= n``.

        Returns:
            ``(sq_dist [B, k], idx [B, k])``: squared distances in ascending order (dtype of
            ``queries``) and int64 indices into the indexed points.
        """
        self._require_built()
        assert self._n is not None
        queries = as_tensor(queries, "queries", ndim=2)
        if queries.shape[1] != self._dim:
            raise ValueError(
                f"queries have {queries.shape[1]} features but the index holds points with "
                f"{self._dim}; search with vectors of the indexed dimension."
            )
        k = check_positive_int(k, "k")
        if k > self._n:
            raise ValueError(f"k={k} exceeds the {self._n} indexed points; use k <= {self._n}.")
        d2, idx = self._search(queries.detach(), k)
        return d2.to(queries.dtype), idx.to(torch.int64)

    def __getstate__(self) -> dict[str, object]:
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        return {**state, "_n": None, "_dim": None}

    def __repr__(self) -> str:
        state = f"n={self._n}, dim={self._dim}" if self.is_built else "not built"
        return f"{type(self).__name__}({state})"

    def _require_built(self) -> None:
        if self._n is None:
            raise RuntimeError(f"{type(self).__name__} is not built; call .build(points) first.")

    @abstractmethod
    def _build(self, points: torch.Tensor) -> None:
        """Index the detached, checked ``points [n, p]``."""

    @abstractmethod
    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Search the detached, checked ``queries [B, p]``; ascending squared distances."""


def knn_recall(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Recall@k of approximate neighbours: the mean fraction of each row of ``exact [B, k]``
    that appears in the same row of ``found [B, k]`` (order ignored)."""
    if found.shape != exact.shape or found.ndim != 2:
        raise ValueError(
            f"found and exact must be index tensors of the same shape [B, k], got "
            f"{tuple(found.shape)} and {tuple(exact.shape)}."
        )
    hits = (found[:, :, None] == exact[:, None, :]).any(dim=1)
    return float(hits.to(torch.float64).mean())
