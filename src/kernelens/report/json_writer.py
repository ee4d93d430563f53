"""``results.json``: every entry of a report as data. It is also the report's memory: a later
run into the same directory reads it back, replaces only its own entries, and the HTML and
Markdown writers re-render the merged list."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .._files import write_atomic

__all__ = ["FORMAT", "VERSION", "read_results", "write_results"]

FORMAT = "kernelens-report"
VERSION = 1
FILENAME = "results.json"


def _jsonable(v: Any) -> Any:
    """Table cells and metrics as JSON: NaN / Inf become strings (JSON has no such numbers)."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if hasattr(v, "item"):  # numpy / torch scalars
        return _jsonable(v.item())
    return v


def read_results(out: Path) -> list[dict[str, Any]]:
    """The entries of an earlier report in ``out`` (``[]`` when there is none).

    Raises:
        ValueError: ``results.json`` exists but is not a kernelens report of this version;
            kernelens will not overwrite what it cannot read back.
    """
    path = out / FILENAME
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{path} exists but is not valid JSON ({exc}); move it away or choose another --out."
        ) from exc
    if isinstance(data, dict) and "format" not in data and isinstance(data.get("entries"), list):
        return []  # written by kernelens before format 1, without what merging needs: replaced
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(
            f'{path} is not a kernelens report (no "format": {FORMAT!r}); it may come from an '
            "older kernelens: delete the directory or choose another --out."
        )
    if data.get("version") != VERSION:
        raise ValueError(
            f"{path} is report format version {data.get('version')!r}, this kernelens writes "
            f"version {VERSION}: delete the directory or choose another --out."
        )
    return list(data["entries"])


def write_results(out: Path, entries: list[dict[str, Any]], provenance: dict[str, Any]) -> Path:
    """Write ``results.json`` atomically; returns its path."""
    doc = {"format": FORMAT, "version": VERSION, "provenance": provenance, "entries": entries}
    path = out / FILENAME
    write_atomic(path, json.dumps(_jsonable(doc), indent=1, allow_nan=False))
    return path
