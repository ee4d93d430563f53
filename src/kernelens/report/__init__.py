"""Reports: render experiment Results to HTML, Markdown and JSON (one writer each)."""

from .entry import ReportEntry
from .runner import run_entries
from .write import check_out_dir, write_report

__all__ = ["ReportEntry", "check_out_dir", "run_entries", "write_report"]
