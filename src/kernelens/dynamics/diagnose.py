"""``diagnose``: read a training run against its linearised (NTK) baseline.

The verdict compares the real network with the linearised copy that :class:`TrainingMonitor`
trained in step with it (source document 001, "From Dynamics to Diagnosis"):

* ``"lazy"``: the real outputs track the linearised ones (relative deviation below
  :data:`DEVIATION_LAZY`);
* ``"underfitting"``: the real network deviates and trains worse than the linearised model
  (train loss above ``(1 + LOSS_MARGIN)`` times the linearised one, or not finite);
* ``"feature_learning"``: it deviates and reaches a validation loss below
  ``(1 - LOSS_MARGIN)`` times the linearised one;
* ``"overfitting"``: it deviates, trains no worse, and its validation loss is above
  ``(1 + LOSS_MARGIN)`` times the linearised one;
* ``"inconclusive"``: it deviates but the validation losses agree within the margin, or there
  is no validation set to tell feature learning from overfitting.

Losses below ``LOSS_FLOOR`` times the initial training loss are compared as equal.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import nn

from .._validation import check_positive, check_positive_int
from .monitor import TrainingMonitor, mse

__all__ = ["DEVIATION_LAZY", "LOSS_FLOOR", "LOSS_MARGIN", "VERDICTS", "Diagnosis", "diagnose"]

VERDICTS = ("lazy", "feature_learning", "overfitting", "underfitting", "inconclusive")
#: Relative output deviation (RMS of real minus linearised outputs over the RMS initial
#: residual) below which a run counts as tracking its linearisation. At 0.1 the two models'
#: predictions differ by a tenth of what training had to move them; the lazy runs of
#: experiment ``dynamics_diagnosis`` sit well below it.
DEVIATION_LAZY = 0.1
#: Relative loss difference that counts as better / worse (10 %).
LOSS_MARGIN = 0.1
#: Losses below this fraction of the initial training loss count as equal (both fitted):
#: comparing 1e-9 with 1e-8 would otherwise read round-off as a verdict.
LOSS_FLOOR = 1e-3


@dataclass
class Diagnosis:
    """The verdict on a training run, the numbers behind it and the thresholds used.

    Attributes:
        verdict: one of :data:`VERDICTS`.
        reason: one sentence saying which rule decided.
        numbers: final deviation, kernel distance, parameter distance, alignment (initial and
            final), and the real and linearised train / validation losses.
        thresholds: ``{"deviation_lazy": ..., "loss_margin": ..., "loss_floor": ...}``.
        history: the monitor's history.
    """

    verdict: str
    reason: str
    numbers: dict[str, float]
    thresholds: dict[str, float]
    history: dict[str, list[float]] = field(repr=False)

    @cached_property
    def figure(self) -> Figure:
        """Losses (real vs linearised), deviation, kernel distance / velocity, alignment."""
        h = self.history
        s = h["step"]
        fig, ax = plt.subplots(1, 3, figsize=(15, 4))
        ax[0].plot(s, h["train_loss"], "C0-", label="train (real)")
        ax[0].plot(s, h["lin_train_loss"], "C0--", label="train (linearised)")
        if any(math.isfinite(v) for v in h["val_loss"]):
            ax[0].plot(s, h["val_loss"], "C1-", label="validation (real)")
            ax[0].plot(s, h["lin_val_loss"], "C1--", label="validation (linearised)")
        ax[0].set_yscale("log")
        ax[0].set_xlabel("step")
        ax[0].set_ylabel("loss")
        ax[0].set_title(f"verdict: {self.verdict}")
        ax[0].legend(fontsize=8)
        ax[1].plot(s, h["deviation"], "k-", label="output deviation")
        ax[1].plot(s, h["kernel_distance"], "C2-", label="kernel distance S(t)")
        ax[1].plot(s, h["param_distance"], "C3-", label="relative parameter distance")
        ax[1].axhline(self.thresholds["deviation_lazy"], color="k", ls=":", lw=1)
        ax[1].set_xlabel("step")
        ax[1].set_title("departure from the linearised model")
        ax[1].legend(fontsize=8)
        ax[2].plot(s, h["kernel_alignment"], "C4-", label="centred kernel-target alignment")
        ax[2].plot(s, h["kernel_velocity"], "C5-", label="kernel velocity")
        if "hessian_top" in h:
            ax2 = ax[2].twinx()
            ax2.plot(s, h["hessian_top"], "C6:", label="Hessian top eigenvalue")
            ax2.legend(fontsize=8, loc="lower right")
        ax[2].set_xlabel("step")
        ax[2].set_title("kernel")
        ax[2].legend(fontsize=8)
        fig.tight_layout()
        plt.close(fig)
        return fig

    def __str__(self) -> str:
        nums = ", ".join(f"{k} = {v:.4g}" for k, v in self.numbers.items())
        return f"{self.verdict}: {self.reason} ({nums})"


def _finite(v: float) -> bool:
    return math.isfinite(v)


def _decide(n: dict[str, float], dev_lazy: float, margin: float) -> tuple[str, str]:
    floor = LOSS_FLOOR * n.get("initial_train_loss", 0.0)

    def lift(v: float) -> float:
        return max(v, floor) if _finite(v) else v

    tr, ltr = lift(n["train_loss"]), lift(n["lin_train_loss"])
    va, lva = lift(n["val_loss"]), lift(n["lin_val_loss"])
    if not _finite(tr):
        return "underfitting", "the real training loss is not finite (training diverged)"
    if _finite(n["deviation"]) and n["deviation"] < dev_lazy and _finite(ltr):
        return "lazy", f"the outputs track the linearised model (deviation < {dev_lazy})"
    if _finite(ltr) and tr > (1 + margin) * ltr:
        return "underfitting", (
            f"it deviates and trains worse than the linearised model (train loss "
            f"{tr:.3g} > (1 + {margin}) x {ltr:.3g})"
        )
    if not _finite(va):
        return "inconclusive", "it deviates, but without validation data the effect is unknown"
    lva_eff = lva if _finite(lva) else math.inf
    if va < (1 - margin) * lva_eff:
        return "feature_learning", (
            f"it deviates with a better validation loss ({va:.3g} < (1 - {margin}) x {lva:.3g})"
        )
    if va > (1 + margin) * lva_eff:
        return "overfitting", (
            f"it deviates, trains no worse (train {tr:.3g} vs {ltr:.3g}) and validates worse "
            f"({va:.3g} > (1 + {margin}) x {lva:.3g})"
        )
    return "inconclusive", (
        f"it deviates but the validation losses agree within {margin:.0%} ({va:.3g} vs {lva:.3g})"
    )


def _numbers(h: dict[str, list[float]]) -> dict[str, float]:
    keys = (
        "deviation",
        "kernel_distance",
        "param_distance",
        "train_loss",
        "lin_train_loss",
        "val_loss",
        "lin_val_loss",
    )
    out = {k: float(h[k][-1]) for k in keys}
    out["initial_train_loss"] = float(h["train_loss"][0])
    out["alignment_initial"] = float(h["kernel_alignment"][0])
    out["alignment_final"] = float(h["kernel_alignment"][-1])
    out["steps"] = float(h["step"][-1])
    if "hessian_top" in h:
        out["hessian_top_final"] = float(h["hessian_top"][-1])
    return out


def _run(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val,
    y_val,
    *,
    steps: int,
    lr: float,
    optimizer: Callable[[Any], torch.optim.Optimizer] | None,
    batch_size: int | None,
    probe_size: int,
    every: int,
    hessian: bool,
    seed: int,
) -> TrainingMonitor:
    if x_train is None or y_train is None:
        raise ValueError("diagnose(model, ...) needs x_train and y_train to train the model.")
    n = x_train.shape[0]
    probe = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:probe_size]
    mon = TrainingMonitor(
        model, x_train[probe], y_train[probe], x_val, y_val, every=every, hessian=hessian
    )
    opt = (
        torch.optim.SGD(model.parameters(), lr=lr)
        if optimizer is None
        else optimizer(model.parameters())
    )
    gen = torch.Generator().manual_seed(seed + 1)
    bs = n if batch_size is None else check_positive_int(batch_size, "batch_size")
    for _ in range(steps):
        idx = torch.randperm(n, generator=gen)[:bs] if bs < n else slice(None)
        xb, yb = x_train[idx], y_train[idx]
        opt.zero_grad()
        mse(model(xb), yb).backward()
        opt.step()
        mon.step(opt, xb, yb)
    return mon


def diagnose(
    source: TrainingMonitor | nn.Module,
    x_train: torch.Tensor | None = None,
    y_train: torch.Tensor | None = None,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    *,
    steps: int = 200,
    lr: float = 0.1,
    optimizer: Callable[[Any], torch.optim.Optimizer] | None = None,
    batch_size: int | None = None,
    probe_size: int = 128,
    every: int = 10,
    hessian: bool = False,
    deviation_lazy: float = DEVIATION_LAZY,
    loss_margin: float = LOSS_MARGIN,
    seed: int = 0,
) -> Diagnosis:
    """Diagnose a training run against its linearised baseline.

    Args:
        source: a :class:`TrainingMonitor` that watched the run, or a model to train here:
            ``steps`` steps of ``optimizer`` (default ``SGD(lr)``) on the MSE loss, full batch
            or ``batch_size``, with a monitor on ``probe_size`` training points.
        x_train, y_train, x_val, y_val: data (for a model source; the validation pair is
            needed to tell feature learning from overfitting).
        steps, lr, optimizer, batch_size, probe_size, every, hessian, seed: the recipe when
            ``source`` is a model (``optimizer`` is ``params -> torch.optim.Optimizer``).
        deviation_lazy, loss_margin: the thresholds (defaults :data:`DEVIATION_LAZY`,
            :data:`LOSS_MARGIN`).

    Returns:
        :class:`Diagnosis` with ``.verdict``, ``.reason``, ``.numbers``, ``.thresholds``,
        ``.figure``.
    """
    dev = check_positive(deviation_lazy, "deviation_lazy")
    margin = check_positive(loss_margin, "loss_margin")
    if margin >= 1:
        raise ValueError(f"loss_margin must be below 1, got {margin}.")
    if isinstance(source, TrainingMonitor):
        mon = source
    elif isinstance(source, nn.Module):
        mon = _run(
            source,
            x_train,
            y_train,
            x_val,
            y_val,
            steps=check_positive_int(steps, "steps"),
            lr=check_positive(lr, "lr"),
            optimizer=optimizer,
            batch_size=batch_size,
            probe_size=check_positive_int(probe_size, "probe_size"),
            every=check_positive_int(every, "every"),
            hessian=hessian,
            seed=seed,
        )
    else:
        raise TypeError(
            f"source must be a TrainingMonitor or an nn.Module, got {type(source).__name__}."
        )
    if mon.steps == 0:
        raise ValueError("the monitor has seen no training step; call mon.step(...) first.")
    numbers = _numbers(mon.history)
    verdict, reason = _decide(numbers, dev, margin)
    return Diagnosis(
        verdict,
        reason,
        numbers,
        {"deviation_lazy": dev, "loss_margin": margin, "loss_floor": LOSS_FLOOR},
        {k: list(v) for k, v in mon.history.items()},
    )
