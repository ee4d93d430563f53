"""A bandwidth heuristic for local kernels: the median distance to the k-th neighbour."""

from __future__ import annotations

import numpy as np
import torch

from .._validation import as_tensor, check_positive_int
from .neighbors import NeighborIndex, make_index

__all__ = ["median_neighbor_distance"]


def median_neighbor_distance(
    points: torch.Tensor,
    k: int,
    *,
    max_queries: int = 1000,
    seed: int = 0,
    index: str | NeighborIndex = "auto",
) -> float:
    """Median, over (a random subsample of) ``points [n, p]``, of the distance from a point to
    its ``k``-th nearest *other* point.

    A Gaussian or Laplace bandwidth of this size makes a typical local Gram of ``k``
    neighbours neither diagonal (bandwidth too small: the layer returns ~0 away from centers)
    nor all-ones (too large: ill-conditioned local systems).
    """
    points = as_tensor(points, "points", ndim=2).detach()
    n = points.shape[0]
    k = check_positive_int(k, "k")
    if k >= n:
        raise ValueError(f"k={k} needs at least k + 1 = {k + 1} points, got {n}.")
    max_queries = check_positive_int(max_queries, "max_queries")
    gen = torch.Generator().manual_seed(seed)
    sub = torch.randperm(n, generator=gen)[:max_queries].to(points.device)
    d2, _ = make_index(index).build(points).search(points[sub], k + 1)
    median = float(np.median(d2[:, k].clamp_min(0).sqrt().cpu().numpy()))
    if median <= 0.0:
        raise ValueError(
            f"the median distance to the {k}-th neighbour is 0: most points have at least {k} "
            "exact duplicates; deduplicate the points or use a larger k."
        )
    return median
