"""Double descent of ridgeless kernel machines: test error against the number of training
samples ``n`` for the Laplace kernel and RFM interpolating noisy labels (``alpha = 0``), swept
across the interpolation threshold ``n ~ d``, with several seeds and standard errors.

A *peak* is only called a peak when it stands clear of the seed spread: the error at ``n_i``
exceeds the lowest error at some smaller ``n`` and the lowest at some larger ``n`` each by
more than two standard errors of the difference. "More strongly" compares the peaks'
relative rise over the valley before them, with a bootstrap over seeds.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from ...data import rfm_scaling
from ...linalg import JitterWarning
from ...rfm import RFMRegressor
from ..registry import register
from ..result import Result, Table

__all__ = ["clear_peak", "double_descent_errors", "rfm_double_descent"]

MODELS: dict[str, dict[str, Any]] = {
    "Laplace kernel": {"iters": 0, "alpha": 0.0},
    "RFM": {"alpha": 0.0},
}


def double_descent_errors(
    sizes: Sequence[int], seeds: Sequence[int], d: int, noise: float, n_test: int = 1000
) -> dict[str, np.ndarray]:
    """Test MSE (against the noise-free target) of ridgeless Laplace kernel and RFM
    interpolants of the scaling task with Gaussian label noise of std ``noise``.

    Returns:
        ``{model: errors [len(sizes), len(seeds)]}``.
    """
    out = {k: np.empty((len(sizes), len(seeds))) for k in MODELS}
    for i, n in enumerate(sizes):
        for j, seed in enumerate(seeds):
            s = rfm_scaling(n, d, n_test=n_test, seed=seed, dtype=torch.float64)
            g = torch.Generator().manual_seed(10_000 + seed)
            y = s.y_train + noise * torch.randn(n, generator=g, dtype=torch.float64)
            for name, params in MODELS.items():
                with warnings.catch_warnings():  # alpha = 0: the solver's jitter is expected
                    warnings.simplefilter("ignore", JitterWarning)
                    model = RFMRegressor(**params).fit(s.X_train, y)
                out[name][i, j] = float(((model.predict(s.X_test) - s.y_test) ** 2).mean())
    return out


def clear_peak(errors: np.ndarray, z: float = 2.0) -> tuple[int, int, int] | None:
    """The highest clear peak of a curve: ``(left valley, peak, right valley)`` indices with
    ``mean[peak] - mean[valley] > z * sqrt(se[peak]^2 + se[valley]^2)`` on both sides, the
    valleys the lowest means left and right of the peak; None if no point qualifies.

    Args:
        errors: ``[sizes, seeds]`` (at least 2 seeds for a standard error).
    """
    if errors.shape[1] < 2:
        return None
    mean = errors.mean(axis=1)
    se = errors.std(axis=1, ddof=1) / np.sqrt(errors.shape[1])
    best: tuple[int, int, int] | None = None
    for i in range(1, len(mean) - 1):
        lo, hi = int(np.argmin(mean[:i])), i + 1 + int(np.argmin(mean[i + 1 :]))
        clear = all(mean[i] - mean[k] > z * np.hypot(se[i], se[k]) for k in (lo, hi))
        if clear and (best is None or mean[i] > mean[best[1]]):
            best = (lo, i, hi)
    return best


def _rise(errors: np.ndarray, peak: tuple[int, int, int]) -> float:
    """Relative rise ``mean[peak] / mean[left valley] - 1``."""
    return float(errors[peak[1]].mean() / errors[peak[0]].mean() - 1)


def _bootstrap_rise_gap(
    a: np.ndarray, pa: tuple[int, int, int], b: np.ndarray, pb: tuple[int, int, int], reps: int
) -> tuple[float, float]:
    """95% interval of ``rise(a) - rise(b)``, seeds resampled independently at each size."""
    rng = np.random.default_rng(0)

    def resample(e: np.ndarray) -> np.ndarray:
        return np.take_along_axis(e, rng.integers(0, e.shape[1], e.shape), axis=1)

    gaps = [_rise(resample(a), pa) - _rise(resample(b), pb) for _ in range(reps)]
    lo, hi = np.percentile(gaps, [2.5, 97.5])
    return float(lo), float(hi)


@register(
    "rfm_double_descent", title="Double descent: ridgeless Laplace kernel and RFM", area="rfm"
)
def rfm_double_descent(quick: bool = True) -> Result:
    """Test error vs n of interpolating (ridgeless) kernel machines, with standard errors."""
    # label noise of about the target's own variance (~580): the variance term, which
    # peaks near the threshold, is then visible (at noise std 5 no curve has a clear peak)
    d, noise = 20, 25.0
    if quick:
        sizes, seeds = [5, 15, 30, 60, 150], [0, 1]
    else:
        sizes = [5, 10, 15, 20, 25, 30, 35, 40, 50, 60, 80, 100, 150, 200, 300, 500]
        seeds = list(range(12))
    t0 = time.perf_counter()
    errs = double_descent_errors(sizes, seeds, d, noise)
    seconds = time.perf_counter() - t0
    mean = {k: e.mean(axis=1) for k, e in errs.items()}
    se = {k: e.std(axis=1, ddof=1) / np.sqrt(len(seeds)) for k, e in errs.items()}
    peaks = {k: clear_peak(e) for k, e in errs.items()}
    rows = [[n, k, float(mean[k][i]), float(se[k][i])] for i, n in enumerate(sizes) for k in errs]
    metrics: dict[str, float] = {"seconds": seconds}
    for k in errs:
        metrics.update({f"n={n} {k} MSE": float(mean[k][i]) for i, n in enumerate(sizes)})
        p = peaks[k]
        metrics[f"{k} clear peak at n"] = float(sizes[p[1]]) if p else float("nan")
        metrics[f"{k} peak rise"] = _rise(errs[k], p) if p else float("nan")

    def describe(k: str) -> str:
        p = peaks[k]
        if p is None:
            return f"{k}: no peak clear of the seed spread (2 standard errors)"
        lo, i, hi = p
        return (
            f"{k}: clear peak at n = {sizes[i]} (MSE {mean[k][i]:.1f} +- {se[k][i]:.1f}) between "
            f"valleys at n = {sizes[lo]} ({mean[k][lo]:.1f} +- {se[k][lo]:.1f}) and n = "
            f"{sizes[hi]} ({mean[k][hi]:.1f} +- {se[k][hi]:.1f}), rise "
            f"{_rise(errs[k], p):+.0%} over the left valley"
        )

    kp, rp = peaks["Laplace kernel"], peaks["RFM"]
    gap = (
        _bootstrap_rise_gap(errs["RFM"], rp, errs["Laplace kernel"], kp, 2000)
        if kp and rp
        else None
    )
    if quick:
        v1 = v2 = "inconclusive (quick mode)"
    else:
        v1 = "reproduced" if kp else "not reproduced"
        v2 = (
            "reproduced"
            if rp and (kp is None or (gap is not None and gap[0] > 0))
            else ("not reproduced")
        )
    metrics["kernel double descent reproduced"] = float(v1 == "reproduced")
    metrics["RFM stronger reproduced"] = float(v2 == "reproduced")
    summary = (
        "**Claims (seed 003):** kernels exhibit double descent, and RFMs more strongly than "
        f"plain kernels. **Setting:** ridgeless (alpha = 0) interpolation of the scaling target "
        f"in d = {d} with label noise std {noise} (noise variance about the target's), n from {sizes[0]} to {sizes[-1]} across the "
        f"threshold n ~ d, {len(seeds)} seeds, test MSE against the noise-free target (mean +- "
        "standard error). A peak counts only if it exceeds the lowest error on each side by "
        "more than 2 standard errors of the difference. "
        + "; ".join(describe(k) for k in errs)
        + ". "
        + (
            f"RFM's rise minus the kernel's: 95% bootstrap interval [{gap[0]:+.0%}, "
            f"{gap[1]:+.0%}]. "
            if gap
            else ""
        )
        + f"**Verdicts:** kernels show double descent: {v1}; RFMs more strongly: {v2}. "
        f"Time {seconds:.0f} s."
    )
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for k in errs:
        ax.errorbar(sizes, mean[k], yerr=2 * se[k], marker="o", capsize=3, label=f"{k} (+- 2 SE)")
    ax.axvline(d, color="grey", ls=":", label="n = d")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training samples n")
    ax.set_ylabel("test MSE (noise-free targets)")
    ax.set_title(f"ridgeless, d = {d}, label noise std {noise}, {len(seeds)} seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return Result(
        name="rfm_double_descent",
        title="Double descent of ridgeless kernel machines",
        summary=summary,
        tables=[
            Table(
                "Test MSE vs n (mean and standard error over seeds)",
                ["n", "model", "MSE", "SE"],
                rows,
            )
        ],
        figures=[("Test MSE vs n, ridgeless Laplace kernel and RFM (+- 2 standard errors)", fig)],
        metrics=metrics,
    )
