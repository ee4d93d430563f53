"""Run experiments for a report, timing each and keeping going when one fails."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence

import matplotlib

from .._progress import progress
from ..experiments.registry import MissingExtraError, get_experiment, list_experiments
from .entry import ReportEntry

__all__ = ["run_entries"]


def run_entries(
    names: Sequence[str] | None = None,
    *,
    quick: bool = True,
    on_done: Callable[[ReportEntry], None] | None = None,
) -> list[ReportEntry]:
    """Run the named experiments (all when ``names`` is empty) and collect their outcomes.

    A failing experiment is recorded with its traceback instead of stopping the others; one
    that needs a missing optional package is recorded with the install command.

    Args:
        names: registry names.
        quick: run the small, CI-sized versions.
        on_done: called with each entry as soon as its experiment finishes (the CLI prints a
            line there, so a log shows progress as it happens).
    """
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    experiments = [get_experiment(n) for n in names] if names else list_experiments()
    entries = []
    for exp in progress(experiments, desc="experiments"):
        t0 = time.perf_counter()
        try:
            result = exp.run(quick)
            entry = ReportEntry(
                exp.name, exp.title, exp.area, time.perf_counter() - t0, result=result, quick=quick
            )
        except MissingExtraError as exc:
            entry = ReportEntry(exp.name, exp.title, exp.area, 0.0, error=str(exc), quick=quick)
        except Exception:
            entry = ReportEntry(
                exp.name,
                exp.title,
                exp.area,
                time.perf_counter() - t0,
                error=traceback.format_exc(),
                quick=quick,
            )
        entries.append(entry)
        plt.close("all")
        if on_done is not None:
            on_done(entry)
    return entries
