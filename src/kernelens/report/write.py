"""``write_report``: turn ReportEntries into records, merge them with the report already in the
output directory, and hand the merged list to the JSON, HTML and Markdown writers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .._files import write_atomic
from .entry import ReportEntry
from .format import one_point_table, png, record_tables
from .html_writer import write_html
from .json_writer import read_results, write_results
from .markdown_writer import write_markdown
from .provenance import provenance as current_provenance

__all__ = ["check_out_dir", "write_report"]


def check_out_dir(out_dir: str | Path) -> Path:
    """Check, before any experiment runs, that a report can be written to ``out_dir``.

    Creates the directory (and ``figures/``) if needed and reads back an existing report.

    Raises:
        ValueError: ``out_dir`` is a file, cannot be created or written, or holds a
            ``results.json`` that is not a kernelens report this version can merge into.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory; choose a directory.")
    try:
        (out / "figures").mkdir(parents=True, exist_ok=True)
        probe = out / ".kernelens-write-test"
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise ValueError(
            f"--out {out}: cannot write there ({exc.strerror or exc}); choose a writable directory."
        ) from exc
    read_results(out)
    return out


def _record(e: ReportEntry, out: Path, prov: dict[str, Any]) -> dict[str, Any]:
    """``e`` as a JSON-ready record; writes its figures to ``out/figures``."""
    own = re.compile(re.escape(e.name) + r"_\d+\.png")  # not those of "<name>_other"
    for old in (out / "figures").glob(f"{e.name}_*.png"):
        if own.fullmatch(old.name):
            old.unlink()
    rec: dict[str, Any] = {
        "name": e.name,
        "title": e.title,
        "area": e.area,
        "seconds": float(e.seconds),
        "provenance": {k: prov[k] for k in ("date", "commit", "kernelens", "torch", "threads")},
        "error": e.error if e.error is not None or e.result is not None else "no result",
        "quick": e.result.quick if e.result is not None else e.quick,
        "summary": "",
        "metrics": {},
        "claims": [],
        "tables": [],
        "figures": [],
    }
    if e.result is None:
        return rec
    r = e.result
    tables = [{"title": t.title, "columns": list(t.columns), "rows": t.rows} for t in r.tables]
    figures = []
    for i, (caption, fig) in enumerate(r.figures):
        as_table = one_point_table(caption, fig)
        if as_table is not None:
            tables.append(
                {"title": as_table.title, "columns": as_table.columns, "rows": as_table.rows}
            )
            continue
        data, info = png(fig)
        fname = f"figures/{e.name}_{i}.png"
        write_atomic(out / fname, data)
        figures.append({"caption": caption, "file": fname, **info})
    rec.update(
        title=r.title,
        summary=r.summary,
        metrics={k: float(v) for k, v in r.metrics.items()},
        claims=[asdict(c) for c in r.claims],
        tables=record_tables(tables),
        figures=figures,
    )
    return rec


def write_report(
    entries: Sequence[ReportEntry], out_dir: str | Path, *, title: str = "kernelens report"
) -> Path:
    """Write ``index.html``, ``index.md``, ``results.json`` and ``figures/*.png`` to ``out_dir``.

    An existing report there keeps its other entries: each of ``entries`` replaces the entry of
    the same name (or is appended), so experiments can be run one at a time into one directory.

    Returns:
        The path of ``index.html``.
    """
    out = check_out_dir(out_dir)
    prov = current_provenance()
    records = read_results(out)
    for e in entries:
        rec = _record(e, out, prov)
        names = [r["name"] for r in records]
        if e.name in names:
            records[names.index(e.name)] = rec
        else:
            records.append(rec)
    write_results(out, records, prov)
    write_markdown(out, records, prov, title)
    return write_html(out, records, prov, title)
