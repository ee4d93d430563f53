"""``index.md``: the report as Markdown, linking the PNG files in ``figures/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._files import write_atomic
from .entry import anchor, not_reproduced, provenance_line, verdict_summary, verdict_text
from .format import fmt, unshown_metrics

__all__ = ["write_markdown"]


def _cell(v: Any) -> str:
    return fmt(v).replace("|", "\\|").replace("\n", " ")


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _entry(r: dict[str, Any]) -> list[str]:
    mode = "quick" if r.get("quick", True) else "full"
    parts = [
        f'<a id="{anchor(r["name"])}"></a>',
        "",
        f"## {r['title']}",
        "",
        f"_{r['name']} · {r['area']} · {mode} mode · {r['seconds']:.1f} s · "
        f"{r['provenance']['date']} · commit {r['provenance']['commit']}_",
        "",
    ]
    if r.get("error") is not None:
        return [*parts, "```", r["error"], "```", ""]
    parts += [r["summary"], ""]
    if r["claims"]:
        rows = [
            [c["claim"], c["source"] or "-", c["ours"], verdict_text(c, r["quick"])]
            for c in r["claims"]
        ]
        parts += [_table("Claims", ["claim", "source", "ours", "verdict"], rows), ""]
    extra = unshown_metrics(r["metrics"], r["tables"])
    if extra:
        parts += [_table("Other headline metrics", ["metric", "value"], list(extra.items())), ""]
    for t in r["tables"]:
        parts += [_table(t["title"], t["columns"], t["rows"]), ""]
    for f in r["figures"]:
        parts += [f"[![{f['caption']}]({f['file']})]({f['file']})", "", f"_{f['caption']}_", ""]
    return parts


def write_markdown(
    out: Path, entries: list[dict[str, Any]], provenance: dict[str, Any], title: str
) -> Path:
    """Write ``out/index.md`` from the report ``entries`` (records as in results.json)."""
    parts = [f"# {title}", "", f"_{provenance_line(provenance)}_", "", "## Contents", ""]
    parts += ["- [Provenance](#provenance)", "- [Overview](#overview)"]
    failed = not_reproduced(entries)
    if failed:
        parts.append("- [Claims we could not reproduce](#not-reproduced)")
    parts += [f"- [{r['title']}](#{anchor(r['name'])})" for r in entries]
    parts += ["", '<a id="provenance"></a>', "", "## Provenance", ""]
    parts += [
        _table("This report was written by", ["field", "value"], list(provenance.items())),
        "",
    ]
    parts += ['<a id="overview"></a>', "", "## Overview", ""]
    rows = [
        [
            f"[{r['name']}](#{anchor(r['name'])})",
            r["area"],
            "quick" if r.get("quick", True) else "full",
            round(r["seconds"], 1),
            "ok" if r.get("error") is None else "FAILED",
            verdict_summary(r),
        ]
        for r in entries
    ]
    parts += [
        _table("Experiments", ["experiment", "area", "mode", "time (s)", "status", "claims"], rows),
        "",
    ]
    if failed:
        parts += ['<a id="not-reproduced"></a>', "", "## Claims we could not reproduce", ""]
        rows = [[f"[{n}](#{anchor(n)})", c, o] for n, c, o in failed]
        parts += [_table("Not reproduced (full mode)", ["experiment", "claim", "ours"], rows), ""]
    for r in entries:
        parts += _entry(r)
    path = out / "index.md"
    write_atomic(path, "\n".join(parts))
    return path
