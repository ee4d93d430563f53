"""``plot.influences``: the training points that support and oppose each prediction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np
from matplotlib.figure import Figure

from .._validation import check_choice
from ._common import as_array, new_figure

__all__ = ["influences"]

Kind = Literal["auto", "images", "table"]
KINDS: tuple[str, ...] = get_args(Kind)
#: share colours: supporters (share > 0) and opponents (share < 0)
_SUPPORT, _OPPOSE = "#1a7f37", "#c62828"


def _images(x: Any, name: str) -> np.ndarray:
    """``[N, H, W]`` (grey) or ``[N, H, W, 3]`` (colour) from ``[N, H, W]`` / ``[N, C, H, W]``."""
    arr = as_array(x, name, ndim=(3, 4))
    if arr.ndim == 4:
        if arr.shape[1] == 1:
            arr = arr[:, 0]
        elif arr.shape[1] == 3:
            arr = arr.transpose(0, 2, 3, 1)
        else:
            raise ValueError(
                f"{name} must be [N, H, W] or [N, C, H, W] with C = 1 or 3, got {arr.shape}."
            )
    return arr


def _label(labels: Any, i: int, class_names: Sequence[str] | None) -> str:
    if labels is None:
        return ""
    v = labels[i]
    v = int(v.item() if hasattr(v, "item") else v)
    return class_names[v] if class_names is not None else str(v)


def influences(
    indices: Any,
    shares: Any,
    *,
    train_images: Any = None,
    test_images: Any = None,
    train_labels: Any = None,
    test_labels: Any = None,
    class_names: Sequence[str] | None = None,
    kind: Kind = "auto",
) -> Figure:
    """Show, for each test point, its top training points with their signed shares.

    Args:
        indices: ``[T, k]`` training indices (e.g. from
            ``ExactPathKernel.top_influences(x, k)``).
        shares: ``[T, k]`` their shares ``a_i / sum_j |a_j|`` (positive: supports the
            prediction, negative: opposes it).
        train_images: ``[N, H, W]`` or ``[N, C, H, W]`` training inputs to draw (``kind``
            ``"images"``).
        test_images: ``[T, ...]`` the test inputs, drawn in the first column.
        train_labels, test_labels: class indices ``[N]`` / ``[T]`` shown under the images.
        class_names: names of the classes.
        kind: ``"images"`` (a grid), ``"table"``, or ``"auto"`` (images when
            ``train_images`` is given).

    Returns:
        A Figure; supporters are marked green, opponents red.
    """
    check_choice(kind, "kind", KINDS)
    idx = as_array(indices, "indices", ndim=2).astype(np.int64)
    sh = as_array(shares, "shares", ndim=2)
    if idx.shape != sh.shape:
        raise ValueError(
            f"indices {idx.shape} and shares {sh.shape} must have the same shape [T, k]."
        )
    if kind == "auto":
        kind = "images" if train_images is not None else "table"
    if kind == "images":
        if train_images is None:
            raise ValueError("kind='images' needs train_images; pass them or use kind='table'.")
        return _grid(
            idx,
            sh,
            _images(train_images, "train_images"),
            test_images,
            train_labels,
            test_labels,
            class_names,
        )
    return _table(idx, sh, train_labels, test_labels, class_names)


def _grid(idx, sh, train, test_images, train_labels, test_labels, class_names) -> Figure:
    T, k = idx.shape
    if idx.max(initial=0) >= train.shape[0] or idx.min(initial=0) < 0:
        raise ValueError(f"indices must lie in [0, {train.shape[0]}), the training images' range.")
    test = None if test_images is None else _images(test_images, "test_images")
    if test is not None and test.shape[0] != T:
        raise ValueError(f"test_images has {test.shape[0]} images but indices has {T} rows.")
    cols = k + (test is not None)
    fig = new_figure(1.45 * cols, 1.75 * T)
    axes = np.atleast_2d(fig.subplots(T, cols, squeeze=False))
    cmap = "gray_r" if train.ndim == 3 else None
    for t in range(T):
        c0 = 0
        if test is not None:
            ax = axes[t, 0]
            ax.imshow(test[t], cmap=cmap)
            ax.set_title(f"test {t}\n{_label(test_labels, t, class_names)}", fontsize=10)
            c0 = 1
        for j in range(k):
            ax = axes[t, c0 + j]
            i, s = int(idx[t, j]), float(sh[t, j])
            ax.imshow(train[i], cmap=cmap)
            colour = _SUPPORT if s > 0 else _OPPOSE
            ax.set_title(
                f"#{i} {s:+.1%}\n{_label(train_labels, i, class_names)}", fontsize=10, color=colour
            )
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(2)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def _table(idx, sh, train_labels, test_labels, class_names) -> Figure:
    T, k = idx.shape
    rows, colours = [], []
    for t in range(T):
        for j in range(k):
            i, s = int(idx[t, j]), float(sh[t, j])
            rows.append(
                [
                    f"{t}"
                    + (
                        f" ({_label(test_labels, t, class_names)})"
                        if test_labels is not None
                        else ""
                    ),
                    str(j + 1),
                    str(i),
                    _label(train_labels, i, class_names) or "-",
                    f"{s:+.2%}",
                    "supports" if s > 0 else "opposes",
                ]
            )
            colours.append(_SUPPORT if s > 0 else _OPPOSE)
    fig = new_figure(7.5, 0.6 + 0.3 * len(rows))
    ax = fig.subplots()
    ax.axis("off")
    table = ax.table(
        cellText=rows,
        colLabels=["test", "rank", "training point", "its label", "share", "effect"],
        loc="upper center",
        cellLoc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    for r, colour in enumerate(colours, start=1):
        table[r, 4].get_text().set_color(colour)
        table[r, 5].get_text().set_color(colour)
    return fig
