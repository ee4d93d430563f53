"""Spatial operations on covariance tensors: padding, convolution and pooling over position
pairs, flattening and global pooling.

Every function takes a covariance ``cov`` whose first ``batch_ndim`` axes are examples and whose
trailing axes are positions: ``S`` (``diagonal``: same-position entries only) or ``S + S``
(all pairs: positions of ``x`` then of ``x'``). Strides, windows and pads follow XLA's
conventions (``SAME``: ``ceil(n / s)`` outputs, the extra pad on the high side).
"""

from __future__ import annotations

import itertools
import math

import torch

__all__ = [
    "conv_cov",
    "flatten_cov",
    "global_pool_cov",
    "pad_amounts",
    "pool_cov",
    "pool_mean",
]


def pad_amounts(
    sizes: tuple[int, ...], window: tuple[int, ...], strides: tuple[int, ...], padding: str
) -> list[tuple[int, int]]:
    """Low and high pads per spatial axis for ``"VALID"``, ``"SAME"`` or ``"CIRCULAR"``."""
    if padding == "VALID":
        return [(0, 0)] * len(sizes)
    pads = []
    for n, f, s in zip(sizes, window, strides, strict=True):
        out = -(-n // s)
        total = max((out - 1) * s + f - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _axes(batch_ndim: int, d: int, k: int, diagonal: bool) -> tuple[int, ...]:
    """The tensor axes that index spatial axis ``k`` (one for x, and one for x' when full)."""
    return (batch_ndim + k,) if diagonal else (batch_ndim + k, batch_ndim + d + k)


def _pad(cov, pads, padding, batch_ndim, d, diagonal):
    for k, (lo, hi) in enumerate(pads):
        if lo == hi == 0:
            continue
        for ax in _axes(batch_ndim, d, k, diagonal):
            n = cov.shape[ax]
            if padding == "CIRCULAR":
                idx = torch.arange(-lo, n + hi, device=cov.device) % n
                cov = cov.index_select(ax, idx)
            else:
                shape = list(cov.shape)
                shape[ax] = lo
                before = cov.new_zeros(shape)
                shape[ax] = hi
                after = cov.new_zeros(shape)
                cov = torch.cat([before, cov, after], dim=ax)
    return cov


def _out_sizes(sizes, window, strides):
    return tuple((n - f) // s + 1 for n, f, s in zip(sizes, window, strides, strict=True))


def conv_cov(cov, window, strides, padding, batch_ndim, d, diagonal):
    """``out(p, q) = mean_o cov(s p + o, s q + o)`` over the filter offsets ``o`` (the same offset
    on both sides: the weights are shared and independent across offsets)."""
    sizes = tuple(cov.shape[batch_ndim : batch_ndim + d])
    pads = pad_amounts(sizes, window, strides, padding)
    cov = _pad(cov, pads, padding, batch_ndim, d, diagonal)
    padded = tuple(cov.shape[batch_ndim : batch_ndim + d])
    out_sizes = _out_sizes(padded, window, strides)
    out = None
    for offset in itertools.product(*(range(f) for f in window)):
        index = [slice(None)] * cov.ndim
        for k in range(d):
            sl = slice(offset[k], offset[k] + strides[k] * (out_sizes[k] - 1) + 1, strides[k])
            for ax in _axes(batch_ndim, d, k, diagonal):
                index[ax] = sl
        piece = cov[tuple(index)]
        out = piece.clone() if out is None else out.add_(piece)
    return out / math.prod(window)


def _window_mean_axis(t, ax, w, s, pad, padding, normalize_edges):
    """Average windows of size ``w`` and stride ``s`` along one axis of ``t``."""
    n = t.shape[ax]
    lo, hi = pad
    if lo or hi:
        if padding == "CIRCULAR":
            t = t.index_select(ax, torch.arange(-lo, n + hi, device=t.device) % n)
        else:
            zeros = [list(t.shape), list(t.shape)]
            zeros[0][ax], zeros[1][ax] = lo, hi
            t = torch.cat([t.new_zeros(zeros[0]), t, t.new_zeros(zeros[1])], dim=ax)
    m = (t.shape[ax] - w) // s + 1
    out = sum(
        t.narrow(ax, o, s * (m - 1) + 1)[(slice(None),) * ax + (slice(None, None, s),)]
        for o in range(w)
    )
    if normalize_edges and padding == "SAME":
        valid = torch.zeros(n + lo + hi, dtype=t.dtype, device=t.device)
        valid[lo : lo + n] = 1
        counts = sum(valid[o : o + s * (m - 1) + 1 : s] for o in range(w))
        shape = [1] * t.ndim
        shape[ax] = m
        return out / counts.reshape(shape)
    return out / w


def pool_cov(cov, window, strides, padding, normalize_edges, batch_ndim, d):
    """Average pooling of a full-layout covariance: the window mean on every position axis of
    x and of x' (pooling is linear and separable)."""
    sizes = tuple(cov.shape[batch_ndim : batch_ndim + d])
    pads = pad_amounts(sizes, window, strides, padding)
    for k in range(d):
        for ax in _axes(batch_ndim, d, k, False):
            cov = _window_mean_axis(
                cov, ax, window[k], strides[k], pads[k], padding, normalize_edges
            )
    return cov


def pool_mean(mean, window, strides, padding, normalize_edges):
    """Average pooling of per-position means ``[n, *S]``."""
    d = mean.ndim - 1
    sizes = tuple(mean.shape[1:])
    pads = pad_amounts(sizes, window, strides, padding)
    for k in range(d):
        mean = _window_mean_axis(
            mean, 1 + k, window[k], strides[k], pads[k], padding, normalize_edges
        )
    return mean


def flatten_cov(cov, batch_ndim, d, diagonal):
    """The kernel of the flattened features: the mean over positions of the same-position
    entries (a dense layer after Flatten sees every position once)."""
    if not diagonal:
        for k in range(d):
            cov = cov.diagonal(0, batch_ndim, batch_ndim + d - k)
    return cov.mean(dim=tuple(range(batch_ndim, batch_ndim + d)))


def global_pool_cov(cov, batch_ndim, d):
    """The kernel of the spatial average: the mean over all position pairs."""
    return cov.mean(dim=tuple(range(batch_ndim, batch_ndim + 2 * d)))
