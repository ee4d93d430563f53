"""Run experiments for a report, timing each and keeping going when one fails."""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence

import matplotlib

from .._progress import progress
from ..experiments.registry import get_experiment, list_experiments
from .render import ReportEntry

__all__ = ["run_entries"]


def run_entries(names: Sequence[str] | None = None, *, quick: bool = True) -> list[ReportEntry]:
    """Run the named experiments (all when ``names`` is empty) and collect their outcomes.

    A failing experiment is recorded with its traceback instead of stopping the others.
    """
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    experiments = [get_experiment(n) for n in names] if names else list_experiments()
    entries = []
    for exp in progress(experiments, desc="experiments"):
        t0 = time.perf_counter()
        try:
            result = exp.run(quick)
            entries.append(
                ReportEntry(exp.name, exp.title, exp.area, time.perf_counter() - t0, result=result)
            )
        except Exception:
            entries.append(
                ReportEntry(
                    exp.name,
                    exp.title,
                    exp.area,
                    time.perf_counter() - t0,
                    error=traceback.format_exc(),
                )
            )
        plt.close("all")
    return entries
