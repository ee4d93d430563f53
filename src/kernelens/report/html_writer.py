"""``index.html``: one page that can be mailed alone (figures embedded as base64 PNGs, each a
link to its full-size file in ``figures/``), with a table of contents, provenance, an overview
table linking to every section, and the claims with their verdicts."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from .._files import write_atomic
from .entry import anchor, not_reproduced, provenance_line, verdict_summary, verdict_text
from .format import fmt, unshown_metrics

__all__ = ["write_html"]

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;font-size:.9em}th{background:#f0f0f0}td.num{text-align:right}
.figscroll{overflow-x:auto}figure{margin:1em 0}figcaption{font-size:.9em;color:#555}
.error{background:#fee;border:1px solid #c00;padding:.5em;white-space:pre-wrap;font-family:monospace}
.meta{color:#666;font-size:.9em}.toc li{margin:.15em 0}
.verdict-reproduced{color:#060}.verdict-not{color:#a00;font-weight:bold}
.verdict-inconclusive{color:#666}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _table(title: str, columns: list[str], rows: list[list[Any]], raw: set[int] = frozenset()):
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td{_num(v)}>{v if j in raw else _e(fmt(v))}</td>" for j, v in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<h4>{_e(title)}</h4><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(v: Any) -> str:
    """Numbers (and the "-" of a missing one) are right-aligned."""
    return ' class="num"' if v is None or isinstance(v, int | float) else ""


def _paragraphs(text: str) -> str:
    """The summary's paragraphs (Markdown kept as escaped text)."""
    return "".join(f"<p>{_e(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


def _verdict_span(text: str) -> str:
    cls = "not" if text.startswith("not") else text.split()[0]
    return f'<span class="verdict-{cls}">{_e(text)}</span>'


def _figure(out: Path, fig: dict[str, Any]) -> str:
    path = out / fig["file"]
    if not path.is_file():
        return f'<p class="error">figure file {_e(fig["file"])} is missing.</p>'
    b64 = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><div class="figscroll"><a href="{_e(fig["file"])}" '
        f'title="open the full-size figure"><img alt="{_e(fig["caption"])}" '
        f'src="data:image/png;base64,{b64}" width="{fig["display_width_px"]}" '
        f'data-min-font-px="{fig["min_font_px"] or 0}"></a></div>'
        f"<figcaption>{_e(fig['caption'])} (click to enlarge)</figcaption></figure>"
    )


def _entry(out: Path, r: dict[str, Any]) -> list[str]:
    parts = [
        f'<h2 id="{anchor(r["name"])}">{_e(r["title"])}</h2>',
        f'<p class="meta">{_e(r["name"])} · {_e(r["area"])} · '
        f"{'quick' if r.get('quick', True) else 'full'} mode · {r['seconds']:.1f} s · "
        f"{_e(r['provenance']['date'])} · commit {_e(r['provenance']['commit'])}</p>",
    ]
    if r.get("error") is not None:
        return [*parts, f'<div class="error">{_e(r["error"])}</div>']
    parts.append(_paragraphs(r["summary"]))
    if r["claims"]:
        rows = [
            [c["claim"], c["source"] or "-", c["ours"], _verdict_span(verdict_text(c, r["quick"]))]
            for c in r["claims"]
        ]
        parts.append(_table("Claims", ["claim", "source", "ours", "verdict"], rows, raw={3}))
    extra = unshown_metrics(r["metrics"], r["tables"])
    if extra:
        parts.append(_table("Other headline metrics", ["metric", "value"], list(extra.items())))
    parts += [_table(t["title"], t["columns"], t["rows"]) for t in r["tables"]]
    parts += [_figure(out, f) for f in r["figures"]]
    return parts


def _overview(entries: list[dict[str, Any]]) -> str:
    rows = [
        [
            f'<a href="#{anchor(r["name"])}">{_e(r["name"])}</a>',
            _e(r["area"]),
            "quick" if r.get("quick", True) else "full",
            _e(fmt(round(r["seconds"], 1))),
            "ok" if r.get("error") is None else "FAILED",
            _e(verdict_summary(r)),
        ]
        for r in entries
    ]
    cols = ["experiment", "area", "mode", "time (s)", "status", "claims"]
    return _table("Experiments", cols, rows, raw=set(range(len(cols))))


def _not_reproduced(entries: list[dict[str, Any]]) -> str:
    rows = [
        [f'<a href="#{anchor(name)}">{_e(name)}</a>', _e(claim), _e(ours)]
        for name, claim, ours in not_reproduced(entries)
    ]
    if not rows:
        return ""
    return '<h2 id="not-reproduced">Claims we could not reproduce</h2>' + _table(
        "Not reproduced (full mode)", ["experiment", "claim", "ours"], rows, raw={0, 1, 2}
    )


def write_html(
    out: Path, entries: list[dict[str, Any]], provenance: dict[str, Any], title: str
) -> Path:
    """Write ``out/index.html`` from the report ``entries`` (records as in results.json)."""
    toc = [
        '<li><a href="#provenance">Provenance</a></li>',
        '<li><a href="#overview">Overview</a></li>',
    ]
    not_rep = _not_reproduced(entries)
    if not_rep:
        toc.append('<li><a href="#not-reproduced">Claims we could not reproduce</a></li>')
    toc += [f'<li><a href="#{anchor(r["name"])}">{_e(r["title"])}</a></li>' for r in entries]
    prov_rows = [[k, v] for k, v in provenance.items()]
    parts = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{_e(provenance_line(provenance))}</p>',
        '<nav><h2 id="contents">Contents</h2><ul class="toc">' + "".join(toc) + "</ul></nav>",
        '<h2 id="provenance">Provenance</h2>',
        _table("This report was written by", ["field", "value"], prov_rows),
        '<p class="meta">Each section also names the date and commit of its own run: running '
        "experiments one by one into the same directory replaces only their own sections.</p>",
        '<h2 id="overview">Overview</h2>',
        _overview(entries),
        not_rep,
    ]
    for r in entries:
        parts += _entry(out, r)
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{''.join(parts)}"
        "</body></html>"
    )
    path = out / "index.html"
    write_atomic(path, page)
    return path
