"""A report's unit: one experiment's outcome, as the JSON-ready record every writer renders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..experiments.result import Result

__all__ = ["ReportEntry"]


@dataclass
class ReportEntry:
    """One experiment's outcome: its Result, or the error it raised, its run time, and whether
    it ran in quick mode."""

    name: str
    title: str
    area: str
    seconds: float
    result: Result | None = None
    error: str | None = None
    quick: bool = True


def anchor(name: str) -> str:
    """The HTML id / Markdown anchor of an experiment's section."""
    return "exp-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def verdict_text(claim: dict[str, Any], quick: bool) -> str:
    """A claim's verdict as the report shows it: quick runs are never evidence."""
    return "inconclusive (quick mode)" if quick else str(claim["verdict"])


def verdict_summary(record: dict[str, Any]) -> str:
    """One cell for the overview table: the verdicts of an entry's claims."""
    if record.get("error") is not None:
        return "-"
    claims = record.get("claims") or []
    if not claims:
        return "no claim recorded"
    if record.get("quick", True):
        return "inconclusive (quick mode)"
    counts: dict[str, int] = {}
    for c in claims:
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    return ", ".join(f"{n} {v}" for v, n in counts.items())


def not_reproduced(entries: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """``(experiment, claim, ours)`` for every full-mode claim judged "not reproduced"."""
    return [
        (r["name"], c["claim"], c["ours"])
        for r in entries
        if r.get("error") is None and not r.get("quick", True)
        for c in r.get("claims") or []
        if c["verdict"] == "not reproduced"
    ]


def provenance_line(p: dict[str, Any]) -> str:
    """The provenance in one line, for the top of a report."""
    return (
        f"kernelens {p['kernelens']} · commit {p['commit']} · torch {p['torch']} · "
        f"{p['threads']} thread(s) · {p['date']} · {p['machine']}"
    )
