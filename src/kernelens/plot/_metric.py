"""``plot.metric``: a learned metric ``M`` (RFM) as a heatmap, with its diagonal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ._common import as_array, new_figure

__all__ = ["metric"]


def metric(
    M: Any, *, feature_names: Sequence[str] | None = None, title: str | None = None
) -> Figure:
    """Plot a metric ``M [d, d]`` (or a fitted RFM estimator, whose ``M_`` is used).

    Args:
        M: the metric ``[d, d]``, its diagonal ``[d]``, or an estimator with ``M_``.
        feature_names: ``d`` names for the axes (default: feature indices).
        title: figure title.

    Returns:
        A Figure: the heatmap of ``M`` (diverging colours centred at 0, so the sign of an
        off-diagonal entry shows) and a bar chart of ``diag(M)``, the weight of each feature.
    """
    if hasattr(M, "M_"):
        M = M.M_
    arr = as_array(M, "M", ndim=(1, 2))
    if arr.ndim == 1:
        arr = np.diag(arr)
    d = arr.shape[0]
    if arr.shape != (d, d):
        raise ValueError(f"M must be square [d, d], got shape {arr.shape}.")
    if feature_names is not None and len(feature_names) != d:
        raise ValueError(f"feature_names has {len(feature_names)} names but M has {d} features.")
    fig = new_figure(9.5, 4.0)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1.1, 1])
    vmax = float(np.abs(arr).max()) or 1.0
    im = ax1.imshow(arr, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax1, shrink=0.85)
    ax1.set_title("M")
    ax2.bar(np.arange(d), np.diag(arr), color="tab:blue")
    ax2.set_title("diag(M): weight of each feature")
    ax2.set_xlabel("feature")
    ax2.grid(alpha=0.3, axis="y")
    if feature_names is not None and d <= 40:
        for ax in (ax1, ax2):
            ax.set_xticks(np.arange(d), feature_names, rotation=90)
        ax1.set_yticks(np.arange(d), feature_names)
    if title:
        fig.suptitle(title)
    return fig
