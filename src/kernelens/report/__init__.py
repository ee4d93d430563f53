"""Reports: render experiment Results to self-contained HTML and Markdown."""

from .render import ReportEntry, write_report
from .runner import run_entries

__all__ = ["ReportEntry", "run_entries", "write_report"]
