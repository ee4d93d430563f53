"""Classic kernel machines on real images: kernel ridge vs Gaussian process, Laplace vs
Gaussian kernels, learning curves on digits and Fashion-MNIST.

This is the baseline every later module is measured against: what a fixed kernel achieves
before any feature learning (RFM), neural training (NTK/EPK) or local approximation (Sparse
Kernels).
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from ...data import digits, fashion_mnist
from ...kernels import GaussianProcessRegressor, KernelClassifier
from ..registry import register
from ..result import Result, Table

__all__ = ["kernel_baselines"]

#: Ridge used by the kernel ridge classifiers (kernel values are in [0, 1]).
RIDGE = 1e-2
#: Points used to fit the GP's hyper-parameters by maximum marginal likelihood (quick, full).
GP_HYPER_POINTS = {True: 200, False: 1000}


def _median_distance(X: np.ndarray, n: int = 500) -> float:
    """The median pairwise distance of (a subsample of) ``X``: the bandwidth heuristic."""
    sub = torch.from_numpy(X[:n])
    d = torch.cdist(sub, sub)
    return float(d[torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)].median())


def _models(bandwidth: float) -> dict[str, object]:
    return {
        "KRR Laplace": KernelClassifier("laplace", bandwidth=bandwidth, alpha=RIDGE),
        "KRR Gaussian": KernelClassifier("gaussian", bandwidth=bandwidth / 2, alpha=RIDGE),
        "KRR linear": KernelClassifier("linear", alpha=1.0),
    }


def _gp_hyperparameters(X: np.ndarray, Y: np.ndarray, n: int) -> GaussianProcessRegressor:
    """A Gaussian-kernel GP on one-hot targets with hyper-parameters fitted by max LML on the
    first ``n`` points."""
    start = GaussianProcessRegressor(
        "gaussian", bandwidth=_median_distance(X) / 2, alpha=1e-2, optimize=True
    )
    return start.fit(X[:n], Y[:n])


def _curve(
    name: str, split, sizes: list[int], quick: bool
) -> tuple[list[list[object]], dict[str, list[float]]]:
    Xtr = split.X_train.reshape(len(split.X_train), -1).double().numpy()
    Xte = split.X_test.reshape(len(split.X_test), -1).double().numpy()
    ytr, yte = split.y_train.numpy(), split.y_test.numpy()
    n_classes = int(ytr.max()) + 1
    bandwidth = _median_distance(Xtr)
    rows: list[list[object]] = []
    curves: dict[str, list[float]] = {}
    gp_hyper = _gp_hyperparameters(Xtr, np.eye(n_classes)[ytr], GP_HYPER_POINTS[quick])
    for n in sizes:
        models = dict(_models(bandwidth))
        models["GP Gaussian (max LML)"] = GaussianProcessRegressor(
            "gaussian",
            bandwidth=gp_hyper.bandwidth_,
            amplitude=gp_hyper.amplitude_,
            alpha=gp_hyper.alpha_,
        )
        for label, model in models.items():
            t0 = time.perf_counter()
            if isinstance(model, GaussianProcessRegressor):
                model.fit(Xtr[:n], np.eye(n_classes)[ytr[:n]])
                pred = model.predict(Xte).argmax(axis=1)
            else:
                model.fit(Xtr[:n], ytr[:n])
                pred = model.predict(Xte)
            seconds = time.perf_counter() - t0
            acc = float((pred == yte).mean())
            curves.setdefault(label, []).append(acc)
            rows.append([name, label, n, acc, seconds])
    return rows, curves


@register(
    "kernel_baselines",
    title="Kernel ridge vs Gaussian process, Laplace vs Gaussian kernels on digits and Fashion-MNIST",
    area="kernels",
)
def kernel_baselines(quick: bool = True) -> Result:
    """Learning curves (test accuracy vs n) of kernel classifiers on two image data sets."""
    sets = {
        "digits": (digits(), [100, 300, 1000] if quick else [50, 100, 200, 400, 800, 1347]),
        "fashion-mnist": (
            fashion_mnist(n_train=1000 if quick else 10000, n_test=500 if quick else 2000),
            [250, 1000] if quick else [250, 500, 1000, 2000, 5000, 10000],
        ),
    }
    rows: list[list[object]] = []
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4))
    metrics: dict[str, float] = {}
    for ax, (name, (split, sizes)) in zip(axes, sets.items()):
        sizes = [s for s in sizes if s <= len(split.X_train)]
        r, curves = _curve(name, split, sizes, quick)
        rows += r
        for label, accs in curves.items():
            ax.plot(sizes, accs, marker="o", label=label)
            metrics[f"{name} {label} acc"] = accs[-1]
        ax.set_xscale("log")
        ax.set_xlabel("training examples n")
        ax.set_ylabel("test accuracy")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    best = {
        name: max(((label, metrics[f"{name} {label} acc"]) for label in curves), key=lambda t: t[1])
        for name in sets
    }
    gaps = {
        name: metrics[f"{name} KRR Laplace acc"] - metrics[f"{name} KRR Gaussian acc"]
        for name in sets
    }
    summary = (
        "Fixed kernels on raw pixels: one-hot kernel ridge regression, and a Gaussian process "
        "whose kernel hyper-parameters maximise the marginal likelihood on a subsample of "
        f"{GP_HYPER_POINTS[quick]} points. Bandwidths follow the median-distance heuristic. Best at "
        "the largest n: "
        + "; ".join(f"{n}: {lab} ({acc:.3f})" for n, (lab, acc) in best.items())
        + ". Laplace minus Gaussian accuracy at the largest n: "
        + "; ".join(f"{n}: {g:+.3f}" for n, g in gaps.items())
        + "."
    )
    return Result(
        name="kernel_baselines",
        title="Kernel baselines on digits and Fashion-MNIST",
        summary=summary,
        tables=[
            Table("Test accuracy vs n", ["data", "model", "n", "accuracy", "fit+predict s"], rows)
        ],
        figures=[("Learning curves: test accuracy vs number of training examples", fig)],
        metrics=metrics,
    )
