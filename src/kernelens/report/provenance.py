"""Where and how a report was made: kernelens version and commit, torch, threads, date, machine."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

__all__ = ["provenance"]


def _commit() -> str:
    """The git commit of the kernelens source in use, with ``+dirty`` for local changes, or
    "unknown" when kernelens is not imported from a git checkout (e.g. an installed wheel)."""
    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short=10", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return head + ("+dirty" if dirty else "")


def _cpu() -> str:
    """The CPU model (from /proc/cpuinfo on Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def provenance() -> dict[str, Any]:
    """A dict describing this run: ``kernelens``, ``commit``, ``torch``, ``threads``, ``date``
    (UTC, ISO 8601), ``machine``, ``cpus`` and ``python``."""
    from .. import __version__

    return {
        "kernelens": __version__,
        "commit": _commit(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.machine()}, {_cpu()}",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
