"""Recursive Feature Machines: the source's scaling test (the text experiment lives in
:mod:`kernelens.experiments.rfm.text`, the Neural Feature Ansatz in
:mod:`kernelens.experiments.rfm.nfa`, double descent in
:mod:`kernelens.experiments.rfm.double_descent`).

The baseline everywhere is the same estimator with ``iters=0``: kernel ridge regression with
the Laplace kernel ``exp(-||x - z|| / L)`` and the same bandwidth and ridge as the RFM.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from ...data import rfm_scaling
from ...rfm import RFMRegressor
from ..registry import register
from ..result import Claim, Result, Table, seed_std

__all__ = [
    "rfm_scaling_test",
    "scaling_curve",
    "scaling_variants",
]


def _mse(model: RFMRegressor, X: torch.Tensor, y: torch.Tensor) -> float:
    return float(((model.predict(X) - y) ** 2).mean())


def scaling_curve(
    dims: Sequence[int], seeds: Sequence[int], n: int
) -> tuple[list[list[Any]], dict[int, dict[str, list[float]]], dict[int, torch.Tensor]]:
    """Test MSE of the Laplace kernel and of RFM (defaults) on the scaling task.

    Returns:
        table rows ``[d, model, mean MSE, std MSE, mean seconds]``, the per-seed MSEs
        ``{d: {model: [...]}}`` and ``diag(M)`` of the first seed's RFM ``{d: [d]}``.
    """
    rows: list[list[Any]] = []
    errs: dict[int, dict[str, list[float]]] = {}
    diags: dict[int, torch.Tensor] = {}
    for d in dims:
        errs[d] = {"Laplace kernel": [], "RFM": []}
        secs: dict[str, list[float]] = {"Laplace kernel": [], "RFM": []}
        for seed in seeds:
            s = rfm_scaling(n, d, n_test=n, seed=seed, dtype=torch.float64)
            # the source's setting: inputs (standard normal already) as they are
            models = (
                ("Laplace kernel", RFMRegressor(iters=0, standardize=False)),
                ("RFM", RFMRegressor(standardize=False)),
            )
            for name, model in models:
                t0 = time.perf_counter()
                model.fit(s.X_train, s.y_train)
                errs[d][name].append(_mse(model, s.X_test, s.y_test))
                secs[name].append(time.perf_counter() - t0)
                if name == "RFM" and seed == seeds[0]:
                    diags[d] = model.M_.diagonal().clone()
        for name, e in errs[d].items():
            rows.append([d, name, float(np.mean(e)), seed_std(e), float(np.mean(secs[name]))])
    return rows, errs, diags


#: Variants tried where plain RFM gains little (label -> RFMRegressor arguments).
VARIANTS: dict[str, dict[str, Any]] = {
    "Laplace kernel (iters=0)": {"iters": 0},
    "RFM defaults": {},
    "RFM bandwidth=30": {"bandwidth": 30.0},
    "RFM iters=10": {"iters": 10},
    "RFM early_stopping": {"early_stopping": True, "random_state": 0},
    "RFM agop_power=0.5, iters=10": {"agop_power": 0.5, "iters": 10},
    "RFM M=diagonal": {"M": "diagonal"},
    "RFM M=diagonal, agop_power=0.5, iters=10": {"M": "diagonal", "agop_power": 0.5, "iters": 10},
}


def scaling_variants(
    d: int, seeds: Sequence[int], n: int, variants: dict[str, dict[str, Any]]
) -> list[list[Any]]:
    """Rows ``[variant, inputs, mean MSE, std MSE]``: each variant on the scaling task as
    given (``axis-aligned``) and after a random rotation of the inputs (``rotated``), which
    keeps the problem's difficulty for a rotation-invariant method but hides the coordinates
    a diagonal metric relies on. The inputs (already standard normal) are used as they are
    (``standardize=False``), so that full-metric RFM is exactly rotation-equivariant."""
    rows = []
    for label, params in variants.items():
        for inputs in ("axis-aligned", "rotated"):
            errs = []
            for seed in seeds:
                s = rfm_scaling(n, d, n_test=n, seed=seed, dtype=torch.float64)
                Xtr, Xte = s.X_train, s.X_test
                if inputs == "rotated":
                    g = torch.Generator().manual_seed(1000 + seed)
                    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
                    Xtr, Xte = Xtr @ Q, Xte @ Q
                model = RFMRegressor(**{"standardize": False, **params}).fit(Xtr, s.y_train)
                errs.append(_mse(model, Xte, s.y_test))
            rows.append([label, inputs, float(np.mean(errs)), seed_std(errs)])
    return rows


@register(
    "rfm_scaling",
    title="RFM scaling test: MSE vs dimension, RFM vs Laplace kernel",
    area="rfm",
    full_minutes=5,
)
def rfm_scaling_test(quick: bool = True) -> Result:
    """The source's scaling test ``y = 5 x1^3 + 10 x2^2 + 2 x3``, ``x ~ N(0, I_d)``."""
    n = 500 if quick else 1000
    dims = [5, 20, 100] if quick else [5, 10, 20, 50, 100, 200, 500, 1000]
    seeds = [0] if quick else [0, 1, 2]
    rows, errs, diags = scaling_curve(dims, seeds, n)
    push_d = 100 if quick else 200
    variants = (
        VARIANTS
        if not quick
        else {
            k: VARIANTS[k]
            for k in ("RFM defaults", "RFM M=diagonal", "RFM M=diagonal, agop_power=0.5, iters=10")
        }
    )
    push = scaling_variants(push_d, seeds, n, variants)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ("Laplace kernel", "RFM"):
        mean = [np.mean(errs[d][name]) for d in dims]
        std = [np.std(errs[d][name]) for d in dims]
        ax.errorbar(dims, mean, yerr=std, marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("test MSE")
    ax.set_title(f"n_train = n_test = {n}, {len(seeds)} seed(s)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()

    show = [d for d in (20, 100, 200) if d in diags] or dims[:1]
    fig2, axes = plt.subplots(1, len(show), figsize=(4.5 * len(show), 3.2), squeeze=False)
    for ax2, d in zip(axes[0], show):
        k = min(d, 30)
        ax2.bar(np.arange(1, k + 1), diags[d][:k].numpy(), color=["C3"] * 3 + ["C0"] * (k - 3))
        ax2.set_xlabel("coordinate")
        ax2.set_ylabel("diag(M)")
        ax2.set_title(f"d = {d} (first {k} coordinates)")
    fig2.tight_layout()

    metrics: dict[str, float] = {}
    for d in dims:
        for name in ("Laplace kernel", "RFM"):
            metrics[f"d={d} {name} MSE"] = float(np.mean(errs[d][name]))
        diag = diags[d]
        metrics[f"d={d} diag(M) share of coordinates 1-3"] = float(diag[:3].sum() / diag.sum())
    for label, inputs, mean, _ in push:
        metrics[f"d={push_d} {label} ({inputs}) MSE"] = mean
    ratio = {d: np.mean(errs[d]["RFM"]) / np.mean(errs[d]["Laplace kernel"]) for d in dims}
    best = min(
        (r for r in push if r[1] == "axis-aligned" and r[0] != "Laplace kernel (iters=0)"),
        key=lambda r: r[2],
    )
    default = next(r for r in push if r[0] == "RFM defaults" and r[1] == "axis-aligned")
    default_rot = next(r for r in push if r[0] == "RFM defaults" and r[1] == "rotated")
    best_rot = next(r for r in push if r[0] == best[0] and r[1] == "rotated")
    summary = (
        f"RFM with its defaults (Laplace kernel, bandwidth 10, ridge 1e-3, 5 iterations, full M) "
        f"against the same kernel without feature learning, n_train = n_test = {n}. "
        "RFM / baseline test-MSE ratio by d: "
        + ", ".join(f"{d}: {ratio[d]:.2f}" for d in dims)
        + ". The learned diag(M) concentrates on coordinates 1-3 "
        + ", ".join(
            f"(d={d}: {metrics[f'd={d} diag(M) share of coordinates 1-3']:.0%} of the trace)"
            for d in dims
        )
        + f". Where plain RFM gains least (d = {push_d}) its MSE is {default[2]:.1f}; the best "
        f"variant tried is '{best[0]}' with {best[2]:.1f}, and {best_rot[2]:.1f} on randomly "
        f"rotated inputs (the same problem for a rotation-invariant method; full-M RFM: "
        f"{default_rot[2]:.1f}). A diagonal metric bets that the target depends on individual "
        "coordinates; the full metric makes no such bet, which is why M='full' stays the "
        "default."
    )
    wins = [d for d in dims if ratio[d] < 1]
    claim = Claim(
        "On f(x) = 5 x1^3 + 10 x2^2 + 2 x3, RFM has a lower test MSE than the Laplace kernel, "
        "and its advantage holds as the dimension d grows.",
        "RFM / Laplace test-MSE ratio: " + ", ".join(f"d={d}: {ratio[d]:.2f}" for d in dims),
        "reproduced" if len(wins) == len(dims) else "not reproduced",
        source="003 (RFM), scaling test",
    )
    return Result(
        name="rfm_scaling",
        title="RFM scaling test",
        summary=summary,
        claims=[claim],
        tables=[
            Table(
                "Test MSE vs d (mean and std over seeds)",
                ["d", "model", "MSE", "std", "fit s"],
                rows,
            ),
            Table(
                f"Pushing further at d = {push_d}, n = {n}",
                ["variant", "inputs", "MSE", "std"],
                push,
            ),
        ],
        figures=[
            ("Test MSE vs dimension: RFM vs the Laplace kernel (same bandwidth and ridge)", fig),
            ("Learned diag(M): coordinates 1, 2, 3 (red) carry the target", fig2),
        ],
        metrics=metrics,
    )
