"""``plot.learning_curves``: a score vs training-set size, one curve per model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ._common import as_array, new_figure

__all__ = ["learning_curves"]


def learning_curves(
    curves: Mapping[str, Sequence[Any]],
    *,
    xlabel: str = "training points n",
    ylabel: str = "test error",
    logx: bool = True,
    logy: bool = False,
    title: str | None = None,
) -> Figure:
    """Plot learning curves.

    Args:
        curves: ``{name: (n, score)}`` or ``{name: (n, score, spread)}`` with ``n``,
            ``score`` and ``spread`` of the same length ``[P]``; ``spread`` (e.g. the std over
            seeds) is drawn as a band ``score +- spread`` (``None`` entries draw no band).
        xlabel, ylabel: axis labels.
        logx, logy: logarithmic axes.
        title: figure title.

    Returns:
        A Figure with one curve per entry of ``curves``.
    """
    if not curves:
        raise ValueError("curves is empty; pass {name: (n, score)} for at least one model.")
    fig = new_figure(6.0, 4.0)
    ax = fig.subplots()
    for name, curve in curves.items():
        if len(curve) not in (2, 3):
            raise ValueError(
                f"curves[{name!r}] must be (n, score) or (n, score, spread), got {len(curve)} "
                "sequences."
            )
        x = as_array(curve[0], f"curves[{name!r}] n", ndim=1)
        y = as_array(curve[1], f"curves[{name!r}] score", ndim=1)
        if x.shape != y.shape:
            raise ValueError(
                f"curves[{name!r}]: n has {x.size} values but score has {y.size}; they must match."
            )
        (line,) = ax.plot(x, y, marker="o", label=name)
        if len(curve) == 3:
            s = np.array([np.nan if v is None else float(v) for v in curve[2]])
            if s.shape != y.shape:
                raise ValueError(f"curves[{name!r}]: spread has {s.size} values, score {y.size}.")
            ax.fill_between(x, y - s, y + s, color=line.get_color(), alpha=0.2, linewidth=0)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    if title:
        ax.set_title(title)
    return fig
