"""``plot.spectrum``: eigenvalue vs rank, and the share of the trace the top ones carry."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ._common import as_array, new_figure

__all__ = ["spectrum"]


def _eigenvalues(values: Any) -> tuple[np.ndarray, float | None]:
    """Descending eigenvalues and the trace (None when only the top ones are known)."""
    if hasattr(values, "eigenvalues") and hasattr(values, "trace"):  # an NTKSpectrum
        return np.sort(as_array(values.eigenvalues, "spectrum.eigenvalues", ndim=1))[::-1], float(
            values.trace
        )
    arr = as_array(values, "values", ndim=(1, 2))
    if arr.ndim == 2:
        if arr.shape[0] != arr.shape[1] or not np.allclose(arr, arr.T, rtol=1e-10, atol=1e-12):
            raise ValueError(
                f"values is a {arr.shape} matrix but not a symmetric square one; pass a kernel "
                "matrix [N, N] or its eigenvalues [k]."
            )
        eig = np.linalg.eigvalsh(arr)[::-1]
        return eig, float(np.trace(arr))
    if arr.size == 0:
        raise ValueError("values is empty; pass at least one eigenvalue.")
    return np.sort(arr)[::-1], None


def spectrum(values: Any, *, label: str | None = None, title: str | None = None) -> Figure:
    """Plot a kernel spectrum (e.g. the NTK's).

    Args:
        values: eigenvalues ``[k]``, a symmetric kernel matrix ``[N, N]`` (its eigenvalues are
            computed in float64), or an :class:`~kernelens.ntk.NTKSpectrum`.
        label: legend label of the curve.
        title: figure title.

    Returns:
        A Figure with two panels: eigenvalue vs rank (log-log; eigenvalues ``<= 0`` are left
        out of the log plot and counted in its title), and the cumulative share of the trace
        carried by the top ``r`` eigenvalues (of the top-``k`` sum when the trace is unknown).
    """
    eig, trace = _eigenvalues(values)
    rank = np.arange(1, eig.size + 1)
    fig = new_figure(9.0, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    pos = eig > 0
    ax1.loglog(rank[pos], eig[pos], marker="." if eig.size < 200 else None, label=label)
    ax1.set_xlabel("rank r")
    ax1.set_ylabel("eigenvalue")
    dropped = int((~pos).sum())
    ax1.set_title("eigenvalues" + (f" ({dropped} <= 0 not shown)" if dropped else ""))
    ax1.grid(alpha=0.3, which="both")
    total = trace if trace is not None else float(eig.sum())
    ax2.plot(rank, np.cumsum(eig) / total, label=label)
    ax2.set_xscale("log")
    ax2.set_ylim(0, 1.02)
    ax2.set_xlabel("rank r")
    ax2.set_ylabel("share of the trace" if trace is not None else "share of the top-k sum")
    ax2.set_title("cumulative share")
    ax2.grid(alpha=0.3, which="both")
    if label:
        ax1.legend()
    if title:
        fig.suptitle(title)
    return fig
