"""A small benchmark harness: warm-up, repeats, medians, same-process ratios, machine facts.

Every script in ``benchmarks/`` times kernelens and its baseline in one process with
:func:`time_call`, prints a Markdown table, and (with ``--record``) appends it with the
machine description to ``BENCHMARKS.md`` via :func:`record`.
"""

from __future__ import annotations

import datetime as _dt
import gc
import os
import platform
import re
import resource
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


@dataclass
class Timing:
    """Median and spread of repeated wall-clock timings (seconds)."""

    median: float
    min: float
    max: float
    repeats: int
    value: Any = None  # the last return value, for accuracy checks

    def __str__(self) -> str:
        return f"{self.median:.4g} s (min {self.min:.4g}, n={self.repeats})"


def time_call(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 3) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; return the median."""
    value = None
    for _ in range(warmup):
        value = fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), min(times), max(times), repeats, value)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_gflops(n: int = 2048, dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """Measured torch.matmul throughput on ``n x n`` matrices, GFLOP/s."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    t = time_call(lambda: a @ b, warmup=2, repeats=repeats)
    return 2 * n**3 / t.median / 1e9


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _blas() -> str:
    cfg = torch.__config__.show()
    for key in ("BLAS_INFO", "LAPACK_INFO"):
        for part in cfg.replace(",", "\n").splitlines():
            if key in part:
                return part.strip()
    return "unknown"


def machine_description() -> dict[str, str]:
    """CPU model, cores, RAM, Python, torch and BLAS versions, torch threads, matmul speed and
    the load average (other processes on the machine skew absolute times, not same-run
    ratios)."""
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = "unknown"
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit or "uncommitted",
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "ram": f"{mem:.0f} GiB",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "blas": _blas(),
        "matmul float32 GFLOP/s": f"{matmul_gflops(dtype=torch.float32):.1f}",
        "matmul float64 GFLOP/s": f"{matmul_gflops(dtype=torch.float64):.1f}",
        "load average at start (1/5/15 min)": " / ".join(f"{v:.1f}" for v in os.getloadavg()),
    }


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; floats are printed with 4 significant digits."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _without_section(text: str, heading: str) -> str:
    """``text`` without the section that starts with the line ``heading`` (up to the next
    Markdown heading of level 1 to 3)."""
    start = text.find("\n" + heading + "\n")
    if start < 0:
        return text
    body_start = start + len(heading) + 2
    nxt = re.search(r"^#{1,3} ", text[body_start:], flags=re.M)
    return text[:start] + ("\n" + text[body_start + nxt.start() :] if nxt else "\n")


def record(title: str, body: str, *, machine: dict[str, str] | None = None) -> None:
    """Write the section ``### title`` (``body`` and the machine description) to
    BENCHMARKS.md, replacing an earlier run's section of the same title; atomic."""
    machine = machine or machine_description()
    desc = "; ".join(f"{k}: {v}" for k, v in machine.items())
    heading = f"### {title}"
    text = f"\n{heading}\n\n_Machine_: {desc}\n\n{body.strip()}\n"
    existing = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    existing = _without_section(existing, heading)
    tmp = BENCHMARKS_MD.with_suffix(".md.tmp")
    tmp.write_text(existing.rstrip("\n") + "\n" + text)
    os.replace(tmp, BENCHMARKS_MD)
