"""Experiment 1 (seed 001): activation smoothness shapes the kernel and the learned functions.

Claim: smooth activations (tanh, erf) give infinitely smooth kernels, while ReLU's kernel is
continuous but not differentiable at x = x', so ReLU networks prefer piecewise-linear functions.

We evaluate depth-3 NTKs and NNGPs on the unit circle, ``K(t) = K(x(t), x(0))``, and measure the
jump of the one-sided derivatives at ``t = 0``; then we fit 1D kernel regression (interpolation)
to a few samples of a smooth target and measure the jump of the interpolant's slope at the
training points.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

import kernelens.infinite as inf

from ..registry import register
from ..result import Result, Table
from ._common import circle_points, verdict

__all__ = ["activation_smoothness"]


def _net(act: inf.Layer, depth: int) -> inf.Layer:
    layers: list[inf.Layer] = []
    for _ in range(depth):
        layers += [inf.Dense(512, W_std=1.5, b_std=0.1), act]
    return inf.serial(*layers, inf.Dense(1, W_std=1.5, b_std=0.1))


ACTIVATIONS = {
    "relu": inf.Relu(),
    "erf": inf.Erf(),
    "tanh": inf.Elementwise(torch.tanh, degree=32),
}


def _derivative_jump(net: inf.Layer, kind: str, h: float) -> float:
    """``(K'(0+) - K'(0-)) / K(0)`` from one-sided differences of step ``h``."""
    x = circle_points(np.array([0.0, h, -h]))
    k = net.kernel(x[:1], x, get=kind)[0].numpy()
    return float(((k[1] - k[0]) / h - (k[0] - k[2]) / h) / k[0])


def _interpolant_kinks(net: inf.Layer, n_train: int, n_grid: int):
    """Kernel interpolation of ``sin(3 t)`` from ``n_train`` points on ``[-1, 1]`` (inputs
    ``(t, 1)`` so the bias direction is separate); returns the grid, the prediction and the
    mean slope jump at the training points relative to the mean slope magnitude."""
    t_train = np.linspace(-1, 1, n_train)
    y = np.sin(3 * t_train)
    x_train = torch.tensor(np.stack([t_train, np.ones_like(t_train)], 1))
    kxx = net.kernel(x_train, get="ntk").numpy()
    alpha = np.linalg.solve(kxx, y)
    t = np.linspace(-1, 1, n_grid)
    x = torch.tensor(np.stack([t, np.ones_like(t)], 1))
    pred = net.kernel(x, x_train, get="ntk").numpy() @ alpha
    h = 1e-5
    jumps = []
    for ti in t_train[1:-1]:
        xs = torch.tensor([[ti - h, 1.0], [ti, 1.0], [ti + h, 1.0]])
        f = net.kernel(xs, x_train, get="ntk").numpy() @ alpha
        jumps.append(abs((f[2] - f[1]) / h - (f[1] - f[0]) / h))
    slope = np.abs(np.gradient(pred, t)).mean()
    return t, pred, float(np.mean(jumps) / slope), t_train, y


@register("activation_smoothness", title="Activation smoothness and kernel regularity",
          area="infinite")  # fmt: skip
def activation_smoothness(quick: bool = True) -> Result:
    depth = 3
    steps = (1e-2, 1e-3) if quick else (1e-2, 1e-3, 1e-4, 1e-5)
    rows, metrics = [], {}
    for name, act in ACTIVATIONS.items():
        net = _net(act, depth)
        for kind in ("nngp", "ntk"):
            jumps = [_derivative_jump(net, kind, h) for h in steps]
            rows.append([name, kind, *jumps])
            metrics[f"{name} {kind} derivative jump (h={steps[-1]:g})"] = jumps[-1]
    n_grid = 101 if quick else 401
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    angles = np.linspace(-np.pi, np.pi, 201)
    for name, act in ACTIVATIONS.items():
        net = _net(act, depth)
        x = circle_points(angles)
        k = net.kernel(circle_points(np.array([0.0])), x, get="ntk")[0].numpy()
        axes[0].plot(angles, k / k.max(), label=name)
        zoom = np.linspace(-0.05, 0.05, 101)
        kz = net.kernel(circle_points(np.array([0.0])), circle_points(zoom), get="ntk")[0]
        axes[1].plot(zoom, kz.numpy() / kz.max().item(), label=name)
        t, pred, kink, t_train, y = _interpolant_kinks(net, 7, n_grid)
        metrics[f"{name} interpolant slope jump at training points"] = kink
        axes[2].plot(t, pred, label=f"{name} (slope jump {kink:.2f})")
    axes[2].plot(t_train, y, "ko", label="training points")
    axes[0].set(title=f"NTK vs angle (depth {depth})", xlabel="angle t", ylabel="K / K(0)")
    axes[1].set(title="zoom at t = 0", xlabel="angle t")
    axes[2].set(title="NTK interpolation of sin(3t)", xlabel="t")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    relu_jump = metrics[f"relu ntk derivative jump (h={steps[-1]:g})"]
    smooth_jump = max(abs(metrics[f"{n} ntk derivative jump (h={steps[-1]:g})"])
                      for n in ("erf", "tanh"))  # fmt: skip
    relu_kink = metrics["relu interpolant slope jump at training points"]
    smooth_kink = max(metrics[f"{n} interpolant slope jump at training points"]
                      for n in ("erf", "tanh"))  # fmt: skip
    relu_nngp = rows[0][2:]
    ok = relu_jump < -0.05 and smooth_jump < 0.05 * abs(relu_jump) and relu_kink > 5 * smooth_kink
    metrics["reproduced"] = float(ok)
    summary = (
        "Claim (seed 001): tanh-like activations give smooth kernels; ReLU's kernel is "
        "continuous but not differentiable at x = x', so ReLU networks learn piecewise-linear-"
        f"looking functions. Measured on depth-{depth} NTKs on the unit circle: the one-sided "
        f"derivatives at t = 0 differ by {relu_jump:.3f} K(0) for ReLU (a kink that does not "
        f"shrink with the step h), and by at most {smooth_jump:.1e} K(0) for erf and tanh "
        f"(vanishing like h). Kernel interpolation of sin(3t) from 7 points: the slope jumps "
        f"at the training points by {relu_kink:.2f} (relative to the mean slope) for ReLU and "
        f"by at most {smooth_kink:.1e} for erf/tanh. The ReLU NNGP, however, is differentiable "
        f"at x = x': its derivative jump falls from {relu_nngp[0]:.1e} to {relu_nngp[-1]:.1e} "
        f"as h shrinks {steps[0] / steps[-1]:g}-fold (arc-cosine kernels of degree 1 are C^1; "
        "the kink enters the NTK through the derivative kernel (pi - theta) / (2 pi)). So the "
        "claim holds for the NTK and, for the NNGP, only in a higher derivative. "
        f"Verdict: {verdict(ok, quick)}."
    )
    return Result(
        name="activation_smoothness",
        title="Activation smoothness and kernel regularity",
        summary=summary,
        tables=[Table("Jump of the kernel's one-sided derivatives at x = x' (relative to K(0))",
                      ["activation", "kernel", *[f"h={h:g}" for h in steps]], rows)],
        figures=[("Kernels against the angle, zoom at the diagonal, 1D interpolants", fig)],
        metrics=metrics,
    )  # fmt: skip
