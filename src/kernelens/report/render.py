"""Render experiment Results to one self-contained HTML file and to Markdown.

The HTML embeds every figure as a base64 PNG, so ``index.html`` can be mailed or archived
alone; the Markdown links PNG files written next to it; ``results.json`` holds the tables and
metrics for machines.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..experiments.result import Result, Table

__all__ = ["ReportEntry", "write_report"]


@dataclass
class ReportEntry:
    """One experiment's outcome: its Result, or the error it raised, and its run time."""

    name: str
    title: str
    area: str
    seconds: float
    result: Result | None = None
    error: str | None = None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3e}"
        return f"{v:.4g}"
    return str(v)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _table_html(t: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in t.rows
    )
    return (
        f"<h4>{html.escape(t.title)}</h4><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _table_md(t: Table) -> str:
    lines = [
        f"**{t.title}**",
        "",
        "| " + " | ".join(t.columns) + " |",
        "|" + "---|" * len(t.columns),
    ]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in t.rows]
    return "\n".join(lines)


def _md_to_html(text: str) -> str:
    """Paragraphs of the summary (Markdown kept as plain escaped text, code spans kept)."""
    paras = [p.strip() for p in text.split("\n\n") if p.strip()]
    return "".join(f"<p>{html.escape(p)}</p>" for p in paras)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right;font-size:.9em}th{background:#f0f0f0}td:first-child{text-align:left}
figure{margin:1em 0}figcaption{font-size:.9em;color:#555}img{max-width:100%}
.error{background:#fee;border:1px solid #c00;padding:.5em;white-space:pre-wrap;font-family:monospace}
.meta{color:#666;font-size:.9em}
"""


def _atomic_write(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def write_report(
    entries: Sequence[ReportEntry], out_dir: str | Path, *, title: str = "kernelens report"
) -> Path:
    """Write ``index.html``, ``index.md``, ``results.json`` and ``figures/*.png`` to ``out_dir``.

    Returns:
        The path of ``index.html``.
    """
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    html_parts = [f"<h1>{html.escape(title)}</h1>", "<h2>Overview</h2>"]
    md_parts = [f"# {title}", "", "## Overview", ""]
    overview = Table(
        "Experiments",
        ["experiment", "area", "mode", "time (s)", "status"],
        [
            [
                e.name,
                e.area,
                ("quick" if e.result.quick else "full") if e.result else "-",
                round(e.seconds, 1),
                "ok" if e.error is None else "FAILED",
            ]
            for e in entries
        ],
    )
    html_parts.append(_table_html(overview))
    md_parts += [_table_md(overview), ""]
    machine: dict[str, Any] = {"entries": []}
    for e in entries:
        anchor = html.escape(e.name)
        html_parts.append(f'<h2 id="{anchor}">{html.escape(e.title)}</h2>')
        html_parts.append(
            f'<p class="meta">{html.escape(e.name)} · {html.escape(e.area)} · {e.seconds:.1f} s</p>'
        )
        md_parts += [f"## {e.title}", "", f"_{e.name} · {e.area} · {e.seconds:.1f} s_", ""]
        record: dict[str, Any] = {"name": e.name, "area": e.area, "seconds": e.seconds}
        if e.error is not None or e.result is None:
            html_parts.append(f'<div class="error">{html.escape(e.error or "no result")}</div>')
            md_parts += ["```", e.error or "no result", "```", ""]
            record["error"] = e.error
            machine["entries"].append(record)
            continue
        r = e.result
        html_parts.append(_md_to_html(r.summary))
        md_parts += [r.summary, ""]
        if r.metrics:
            mt = Table(
                "Headline metrics", ["metric", "value"], [[k, v] for k, v in r.metrics.items()]
            )
            html_parts.append(_table_html(mt))
            md_parts += [_table_md(mt), ""]
        for t in r.tables:
            html_parts.append(_table_html(t))
            md_parts += [_table_md(t), ""]
        for i, (caption, fig) in enumerate(r.figures):
            png = _png(fig)
            fname = f"figures/{e.name}_{i}.png"
            _atomic_write(out / fname, png)
            b64 = base64.b64encode(png).decode("ascii")
            html_parts.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
            md_parts += [f"![{caption}]({fname})", "", f"_{caption}_", ""]
        record.update(
            title=r.title,
            quick=r.quick,
            summary=r.summary,
            metrics={k: float(v) for k, v in r.metrics.items()},
            tables=[{"title": t.title, "columns": t.columns, "rows": t.rows} for t in r.tables],
        )
        machine["entries"].append(record)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(html_parts)}</body></html>"
    )
    _atomic_write(out / "index.html", page)
    _atomic_write(out / "index.md", "\n".join(md_parts))
    _atomic_write(out / "results.json", json.dumps(machine, indent=1, default=_fmt))
    return out / "index.html"
