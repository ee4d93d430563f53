"""How RFMRegressor's defaults were chosen: one hyper-parameter at a time around them, on the
source's scaling task (test MSE, mean over seeds)."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from ...data import rfm_scaling
from ...rfm import RFMRegressor
from ..registry import register
from ..result import Result, Table

__all__ = ["GRID", "defaults_sweep", "rfm_defaults"]

#: hyper-parameter -> values tried (everything else at its default)
GRID: dict[str, list[Any]] = {
    "bandwidth": [1.0, 3.0, 10.0, 30.0, 100.0],
    "alpha": [1e-6, 1e-3, 1e-1],
    "iters": [0, 1, 2, 3, 5, 8],
    "agop_power": [0.5, 1.0],
    "centering": [False, True],
    "early_stopping": [False, True],
}


def defaults_sweep(
    dims: list[int], seeds: list[int], n: int, grid: dict[str, list[Any]]
) -> list[list[Any]]:
    """Rows ``[parameter, value, d, mean MSE, std MSE]``."""
    default = RFMRegressor().get_params()
    rows = []
    for name, values in grid.items():
        for value in values:
            for d in dims:
                errs = []
                for seed in seeds:
                    s = rfm_scaling(n, d, n_test=n, seed=seed, dtype=torch.float64)
                    model = RFMRegressor(**{name: value}, random_state=seed)
                    model.fit(s.X_train, s.y_train)
                    errs.append(float(((model.predict(s.X_test) - s.y_test) ** 2).mean()))
                label = f"{value}" + (" (default)" if value == default[name] else "")
                rows.append([name, label, d, float(np.mean(errs)), float(np.std(errs))])
    return rows


@register("rfm_defaults", title="RFM defaults: one hyper-parameter at a time", area="rfm")
def rfm_defaults(quick: bool = True) -> Result:
    """Sensitivity of RFM's test MSE to each hyper-parameter, around the defaults."""
    n = 200 if quick else 1000
    dims = [10] if quick else [10, 50, 200]
    seeds = [0] if quick else [0, 1, 2]
    grid = {"bandwidth": [3.0, 10.0, 30.0], "iters": [0, 1, 5]} if quick else GRID
    rows = defaults_sweep(dims, seeds, n, grid)
    fig, axes = plt.subplots(1, len(grid), figsize=(3.2 * len(grid), 3.2), squeeze=False)
    metrics: dict[str, float] = {}
    for ax, name in zip(axes[0], grid):
        for d in dims:
            sel = [r for r in rows if r[0] == name and r[2] == d]
            ax.plot(range(len(sel)), [r[3] for r in sel], marker="o", label=f"d={d}")
            for r in sel:
                metrics[f"{name}={r[1].split()[0]} d={d} MSE"] = r[3]
        ax.set_xticks(range(len(grid[name])))
        ax.set_xticklabels([str(v) for v in grid[name]], rotation=45, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(name)
    axes[0][0].set_ylabel("test MSE")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    best = {}
    for name in grid:
        for d in dims:
            sel = [r for r in rows if r[0] == name and r[2] == d]
            best[(name, d)] = min(sel, key=lambda r: r[3])[1]
    summary = (
        f"Scaling task, n_train = n_test = {n}, {len(seeds)} seed(s); each hyper-parameter "
        "varied alone around the defaults (bandwidth 10, alpha 1e-3, iters 5, agop_power 1, "
        "centering on, no early stopping). Best value per parameter and d: "
        + "; ".join(f"{name} (d={d}): {v}" for (name, d), v in best.items())
        + "."
    )
    return Result(
        name="rfm_defaults",
        title="RFM defaults",
        summary=summary,
        tables=[
            Table("Test MSE, one parameter varied", ["parameter", "value", "d", "MSE", "std"], rows)
        ],
        figures=[("Test MSE against each hyper-parameter (others at their defaults)", fig)],
        metrics=metrics,
    )
