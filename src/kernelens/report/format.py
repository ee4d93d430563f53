"""Shared formatting for the report writers: values, PNG rendering with legible text, and the
quick-mode clean-ups (one-point "curves" become table rows; tables and metrics shown twice go).
"""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib.text
from matplotlib.collections import LineCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from ..experiments.result import Table

__all__ = ["fmt", "one_point_table", "png", "record_tables", "unshown_metrics"]

#: PNG resolution (dots per inch). At 150 dpi a 10 pt label is 21 px high in the file, so the
#: browser may shrink a figure to half its pixel width before that label falls under 10 px.
DPI = 150
#: The smallest text height, in CSS pixels at the displayed size, a figure may have.
MIN_TEXT_PX = 10.0
#: Content width of the HTML page (CSS pixels); wider figures scroll sideways instead of
#: shrinking below MIN_TEXT_PX.
PAGE_WIDTH_PX = 1060
#: Figures are shown at the size they would have at this resolution (so the PNG has 1.5 file
#: pixels per CSS pixel, sharp on high-density screens), unless that is wider than the page.
DISPLAY_DPI = 100


def fmt(v: Any) -> str:
    """A table cell: ``None`` (no value, e.g. the spread of a single seed) shows as "-"."""
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3e}"
        return f"{v:.4g}"
    return str(v)


def _min_font_pt(fig: Figure) -> float | None:
    sizes = [
        t.get_fontsize()
        for t in fig.findobj(matplotlib.text.Text)
        if t.get_visible() and t.get_text().strip()
    ]
    return min(sizes) if sizes else None


def png(fig: Figure) -> tuple[bytes, dict[str, Any]]:
    """Render ``fig`` and say how wide to display it.

    Returns:
        The PNG bytes and ``{"width_px", "height_px", "min_font_px", "display_width_px"}``:
        the file's size, its smallest text height in file pixels, and the display width (CSS
        pixels): the figure's size at :data:`DISPLAY_DPI`, at most the page width, but never
        so narrow that its smallest text falls under :data:`MIN_TEXT_PX`.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    data = buf.getvalue()
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    pt = _min_font_pt(fig)
    font_px = pt * DPI / 72 if pt else None
    display = min(math.ceil(width * DISPLAY_DPI / DPI), PAGE_WIDTH_PX)
    if font_px:
        display = max(display, math.ceil(width * MIN_TEXT_PX / font_px))
    return data, {
        "width_px": width,
        "height_px": height,
        "min_font_px": font_px,
        "display_width_px": display,
    }


def one_point_table(caption: str, fig: Figure) -> Table | None:
    """A figure whose every curve has a single point (a quick run with one size, one seed)
    as a table row per curve; ``None`` for a real figure."""
    rows: list[list[Any]] = []
    for ax in fig.axes:
        for c in ax.collections:
            if not isinstance(c, LineCollection) or len(c.get_segments()) > 1:
                return None
        if ax.images or ax.patches:
            return None
        labels: dict[int, str] = {}  # an errorbar's label sits on its container
        caps: set[int] = set()
        for cont in ax.containers:
            if isinstance(cont, ErrorbarContainer):
                data_line, caplines, _ = cont.lines
                if data_line is not None:
                    labels[id(data_line)] = cont.get_label()
                caps.update(id(cl) for cl in caplines)
        for line in ax.get_lines():
            if id(line) in caps:
                continue
            x, y = line.get_xdata(), line.get_ydata()
            if len(x) > 1:
                return None
            if len(x) == 1:
                label = labels.get(id(line), line.get_label())
                rows.append(
                    [
                        ax.get_title() or "-",
                        "-" if label.startswith("_") else label,
                        ax.get_xlabel() or "x",
                        float(x[0]),
                        ax.get_ylabel() or "y",
                        float(y[0]),
                    ]
                )
    if not rows:
        return None
    return Table(
        f"{caption} (one point per curve in this run, so a table instead of a plot)",
        ["panel", "curve", "x axis", "x", "y axis", "y"],
        rows,
    )


def record_tables(tables: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``tables`` without exact repeats (same columns and rows), first occurrence kept."""
    seen: set[str] = set()
    out = []
    for t in tables:
        key = repr((t["columns"], t["rows"]))
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def unshown_metrics(metrics: dict[str, float], tables: list[dict[str, Any]]) -> dict[str, float]:
    """The headline metrics whose value does not already appear in one of ``tables`` (so the
    report does not print the same numbers twice)."""
    shown = {fmt(v) for t in tables for row in t["rows"] for v in row}
    return {k: v for k, v in metrics.items() if fmt(v) not in shown}
