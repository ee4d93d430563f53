"""The neighbour-index interface shared by every search backend, and a recall measure.

An index is built once on points ``[n, p]`` and answers k-nearest-neighbour queries in the
squared Euclidean distance (``metric="l2"``) or the L1 distance (``metric="l1"``).

One rule decides the answer, whatever the backend: the neighbours of a query are the ``k``
points with the smallest *reference* distances (computed here from the differences
``q - z``, in the points' dtype, by one routine shared by every backend), ties broken by the
lowest index. A backend only proposes candidates: it returns its ``k + extra`` nearest points
in its own arithmetic (faiss: float32), which are re-ranked by the reference distances. For
exact backends a row is accepted only when a bound on the backend's rounding error proves
that no other point can come before its k-th neighbour; other rows (ties and near ties at the
k-th place, e.g. duplicated points) are answered by an exact scan of all points. So the
exact backends (torch, faiss flat) give identical neighbours; approximate ones (HNSW) give
the ``k`` best of the candidates they return, ties by the lowest index.

Indexes hold derived data only: they are never part of a layer's ``state_dict`` and are
rebuilt from the points when those change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal, get_args

import torch

from ..._memory import element_size, tile_grid, tile_size
from ..._validation import as_tensor, check_choice, check_positive_int

__all__ = ["METRICS", "Metric", "NeighborIndex", "knn_recall"]

Metric = Literal["l2", "l1"]
#: Metrics an index can search in: squared Euclidean (``"l2"``) or L1 (``"l1"``) distance.
METRICS: tuple[str, ...] = get_args(Metric)
#: Temporaries per element of a ``[rows, candidates, p]`` block of differences.
_DIFF_TEMPORARIES = 3
#: Temporaries per entry of a ``[rows, points]`` tile of expanded distances (with the mask).
_TILE_TEMPORARIES = 3
#: Safety factor on the worst-case rounding-error bound of a backend's distances.
_BOUND_FACTOR = 8.0


def _extra_candidates(k: int) -> int:
    """Candidates a backend returns beyond ``k`` (margin for the re-ranking and its proof)."""
    return max(8, k // 4)


def reference_distances(Q: torch.Tensor, P: torch.Tensor, metric: str) -> torch.Tensor:
    """The distances that decide every search: ``Q [b, 1, p]`` against ``P [b or 1, m, p]``
    -> ``[b, m]``, from the differences of the points as given (each entry depends only on its
    own pair of points, so a candidate re-ranking and a full scan give the same value to the
    bit, and duplicated or symmetrically placed points tie exactly)."""
    diff = Q - P  # a new contiguous tensor: the sum runs over its last, contiguous axis
    return (diff.abs_() if metric == "l1" else diff.square_()).sum(dim=-1)


class NeighborIndex(ABC):
    """k-nearest-neighbour search in squared Euclidean (or L1) distance.

    Subclasses implement :meth:`_build` and :meth:`_search` (candidates in the backend's own
    arithmetic, see the module docstring) and say how precise that arithmetic is
    (:attr:`backend_eps`); the public methods validate the input and the state, re-rank the
    candidates and, for exact backends, prove or complete each row. ``exact`` says whether
    results are exact or approximate. Convention: configuration lives in public attributes,
    built data in private (``_``-prefixed) ones; copies and pickles keep the configuration
    only (an index is derived data, rebuilt where it is used).

    Args:
        memory_budget: bytes for a block of candidate differences and for the exact scan
            (default: 2 GiB, or $KERNELENS_MEMORY_BUDGET).
    """

    #: Backend name as accepted by :func:`~kernelens.sparse.make_index`.
    name: str = "index"
    #: Whether :meth:`search` returns the exact nearest neighbours.
    exact: bool = True

    def __init__(self, *, memory_budget: int | None = None) -> None:
        self.memory_budget = memory_budget
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

    @property
    def metric(self) -> str:
        """The metric the index was built for (raises if the index is not built)."""
        self._require_built()
        return self._metric

    def build(self, points: torch.Tensor, *, metric: Metric = "l2") -> NeighborIndex:
        """Index ``points [n, p]`` for search in ``metric`` (``"l2"``: squared Euclidean,
        ``"l1"``), replacing whatever was indexed before; returns ``self``."""
        points = as_tensor(points, "points", ndim=2).detach()
        self._metric = check_choice(metric, "metric", METRICS)
        # the reference distances use the points as given (so exact ties, e.g. of points
        # placed symmetrically about a query, stay exact); every backend searches them
        # centred on their mean, which keeps the rounding of the Gram expansion small
        self._points = points
        self._centre = points.mean(dim=0, keepdim=True)
        P = points - self._centre
        norms = P.abs().sum(dim=1) if self._metric == "l1" else (P * P).sum(dim=1)
        self._radius = float(norms.max())  # largest L1 norm or squared L2 norm, centred
        self._build(P)
        self._n, self._dim = points.shape
        return self

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` nearest indexed points of each query.

        Args:
            queries: ``[B, p]`` (``B = 0`` gives empty results).
            k: number of neighbours, ``1 <= k <= n``.

        Returns:
            ``(dist [B, k], idx [B, k])``: reference distances (squared Euclidean, or L1) in
            ascending order, ties by ascending index (dtype of the points), and int64 indices
            into the indexed points.
        """
        self._require_built()
        assert self._n is not None and self._dim is not None
        queries = as_tensor(queries, "queries", ndim=2, allow_empty=True)
        if queries.shape[1] != self._dim:
            raise ValueError(
                f"queries have {queries.shape[1]} features but the index holds points with "
                f"{self._dim}; search with vectors of the indexed dimension."
            )
        k = check_positive_int(k, "k")
        if k > self._n:
            raise ValueError(f"k={k} exceeds the {self._n} indexed points; use k <= {self._n}.")
        Q = queries.detach().to(self._points.dtype)
        kc = min(self._n, k + _extra_candidates(k))
        per_row = _DIFF_TEMPORARIES * kc * self._dim * element_size(Q.dtype)
        rows = tile_size(Q.shape[0], per_row, self.memory_budget)
        out_d = [Q.new_zeros(0, k)]
        out_i = [torch.zeros(0, k, dtype=torch.int64, device=Q.device)]
        for r0 in range(0, Q.shape[0], rows):
            d, i = self._search_rows(Q[r0 : r0 + rows], k, kc)
            out_d.append(d)
            out_i.append(i)
        return torch.cat(out_d), torch.cat(out_i)

    def __getstate__(self) -> dict[str, object]:
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        return {**state, "_n": None, "_dim": None}

    def __repr__(self) -> str:
        state = f"n={self._n}, dim={self._dim}" if self.is_built else "not built"
        return f"{type(self).__name__}({state})"

    # -- the rule that decides every answer ------------------------------------------------------
    def _search_rows(self, Q: torch.Tensor, k: int, kc: int) -> tuple[torch.Tensor, torch.Tensor]:
        Qc = Q - self._centre
        d_backend, cand = self._search(Qc, kc)
        cand = cand.to(device=Q.device, dtype=torch.int64)
        d, idx, n_valid = self._rerank(Q, cand, k)
        redo = n_valid < k  # an approximate backend returned too few candidates
        if self.exact and kc < self._n:
            # non-candidates are at least (backend's kc-th distance - bound) away: if that is
            # beyond the k-th reference distance, the row is proven; else scan all points
            floor = d_backend[:, -1].to(d.dtype) - self._error_bound(Qc)
            redo |= ~(d[:, -1] < floor)
        if bool(redo.any()):
            d[redo], idx[redo] = self._scan(Q[redo], Qc[redo], k, d[redo, -1])
        return d, idx

    def _rerank(
        self, Q: torch.Tensor, cand: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ``k`` best candidates by (reference distance, index), and how many were valid."""
        cand, _ = torch.sort(cand, dim=1)  # by index: the stable sort below breaks ties by it
        valid = cand >= 0
        d = reference_distances(Q[:, None, :], self._points[cand.clamp_min(0)], self._metric)
        d = d.masked_fill(~valid, float("inf"))
        d, order = torch.sort(d, dim=1, stable=True)
        return d[:, :k], cand.gather(1, order[:, :k]), valid.sum(dim=1)

    def _scan(
        self, Q: torch.Tensor, Qc: torch.Tensor, k: int, upper: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact neighbours of rows whose candidates were not proven.

        ``upper [b]`` bounds each row's k-th reference distance from above (the k-th of its
        re-ranked candidates; ``inf`` if it had fewer than ``k``). Every point whose distance
        by a tiled Gram expansion (L1: ``torch.cdist``) in the points' dtype lies within that
        computation's error bound of ``upper`` becomes a candidate, which includes every point
        of the answer; the candidates (all tied points among them) are then re-ranked by the
        reference distances.
        """
        n, p = self._points.shape
        b, item = Q.shape[0], element_size(Q.dtype)
        limit = upper + self._error_bound(Qc, torch.finfo(Q.dtype).eps)
        rows, cols = tile_grid(b, n, _TILE_TEMPORARIES * item, self.memory_budget, rows_hint=b)
        q2 = (Qc * Qc).sum(dim=1)
        sel_rows, sel_cols = [], []
        for c0 in range(0, n, cols):
            P = self._points[c0 : c0 + cols] - self._centre
            p2 = (P * P).sum(dim=1)
            for r0 in range(0, b, rows):
                q = Qc[r0 : r0 + rows]
                if self._metric == "l1":
                    D = torch.cdist(q, P, p=1.0)
                else:
                    D = torch.addmm(p2[None, :], q, P.T, alpha=-2.0).add_(q2[r0 : r0 + rows, None])
                r, c = torch.nonzero(D <= limit[r0 : r0 + rows, None], as_tuple=True)
                sel_rows.append(r + r0)
                sel_cols.append(c + c0)
        r, c = torch.cat(sel_rows), torch.cat(sel_cols)
        order = torch.argsort(r, stable=True)
        r, c = r[order], c[order]
        counts = torch.bincount(r, minlength=b)
        pos = torch.arange(r.numel(), device=r.device) - (torch.cumsum(counts, 0) - counts)[r]
        cand = torch.full((b, int(counts.max())), -1, dtype=torch.int64, device=Q.device)
        cand[r, pos] = c
        step = tile_size(b, _DIFF_TEMPORARIES * cand.shape[1] * p * item, self.memory_budget)
        parts = [self._rerank(Q[i : i + step], cand[i : i + step], k) for i in range(0, b, step)]
        return torch.cat([d for d, _, _ in parts]), torch.cat([i for _, i, _ in parts])

    def _error_bound(self, Q: torch.Tensor, eps: float | None = None) -> torch.Tensor:
        """``[b]``: a bound on ``|computed distance - reference distance|`` over all points
        (worst-case rounding of a Gram expansion with unit round-off ``eps``, default the
        backend's, and of the float32 cast, times a safety factor), for queries ``Q``
        relative to the centre of the points."""
        eps = max(self.backend_eps(Q.dtype) if eps is None else eps, torch.finfo(Q.dtype).eps)
        if self._metric == "l1":
            scale = Q.abs().sum(dim=1) + self._radius
        else:
            scale = (Q * Q).sum(dim=1) + self._radius
        return _BOUND_FACTOR * (Q.shape[1] + 4) * eps * scale

    def _require_built(self) -> None:
        if self._n is None:
            raise RuntimeError(f"{type(self).__name__} is not built; call .build(points) first.")

    # -- for subclasses ---------------------------------------------------------------------------
    def backend_eps(self, dtype: torch.dtype) -> float:
        """Unit round-off of the backend's distance computations for points of ``dtype``."""
        return torch.finfo(dtype).eps

    @abstractmethod
    def _build(self, points: torch.Tensor) -> None:
        """Index the detached, checked ``points [n, p]``, centred on their mean (metric:
        ``self._metric``)."""

    @abstractmethod
    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` nearest of ``queries [b, p]`` (centred like the points) in the backend's
        arithmetic:
        ``(dist [b, k], idx [b, k])``, ascending; exact backends must return the exact ``k``
        smallest of their computed distances; ``idx = -1`` marks a missing neighbour."""


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
