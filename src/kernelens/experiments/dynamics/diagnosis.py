"""Training diagnosis on real data (source document 001, "The Learning Process: From Dynamics
to Diagnosis"): comparing a network's training and validation loss with its linearised (NTK)
counterpart tells lazy training, beneficial feature learning, harmful overfitting and
optimisation failure apart.

Four runs are designed to land in the four regimes, each watched by a
:class:`~kernelens.dynamics.TrainingMonitor` and read by :func:`~kernelens.dynamics.diagnose`
(MSE on one-hot targets, digits and in full mode Fashion-MNIST too):

* **lazy**: a wide MLP (NTK parameterisation), plain SGD at a fifth of the linearised stability
  limit ``2 y.size / lambda_max``;
* **feature learning**: a narrow MLP with a large step (Adam, lr 0.05);
* **overfitting**: 64 examples with noisy targets (noise std 1 on one-hot targets), trained
  by Adam until the training set is fitted;
* **underfitting**: a deliberately broken optimiser (:class:`SpikedSGD`: a warm-up bug that
  multiplies the step by 300 once) on a ReLU MLP, whose kernel the spike damages.

The verdict of the experiment is whether ``diagnose`` returned the intended label for each run.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from torch import nn

from ...data import digits, fashion_mnist
from ...dynamics import diagnose
from ...ntk import empirical_ntk
from ..registry import register
from ..result import Claim, Result, Table
from ._nets import ntk_mlp

__all__ = ["REGIMES", "SpikedSGD", "dynamics_diagnosis"]


class SpikedSGD(torch.optim.SGD):
    """SGD with a deliberate bug: at step ``spike_at`` the learning rate is multiplied by
    ``spike`` (a broken warm-up schedule). Its parameter groups carry ``spike`` and
    ``spike_at``, so a clone (as :class:`TrainingMonitor` makes) has the same bug."""

    def __init__(self, params, lr: float = 0.1, spike: float = 300.0, spike_at: int = 1):
        super().__init__(params, lr=lr)
        for g in self.param_groups:
            g.setdefault("spike", spike)
            g.setdefault("spike_at", spike_at)
        self._count = 0

    @torch.no_grad()
    def step(self, closure=None):
        self._count += 1
        saved = [g["lr"] for g in self.param_groups]
        for g in self.param_groups:
            if self._count == g["spike_at"]:
                g["lr"] = g["lr"] * g["spike"]
        try:
            return super().step(closure)
        finally:
            for g, lr in zip(self.param_groups, saved):
                g["lr"] = lr


@dataclass(frozen=True)
class Regime:
    """One designed run: data size, network, optimiser, steps and the intended verdict."""

    intended: str
    n_train: int
    width: int
    steps: int
    act: type[nn.Module] = nn.ReLU
    optimizer: str = "sgd"  # "sgd" (lr = fraction of the stability limit), "adam", "spiked"
    step: float = 0.2
    noise: float = 0.0


REGIMES = {
    "wide, small step": Regime("lazy", 128, 1024, 100, step=0.2),
    "narrow, large step": Regime("feature_learning", 256, 32, 200, optimizer="adam", step=0.05),
    "few examples, long training": Regime(
        "overfitting", 64, 64, 300, optimizer="adam", step=0.02, noise=1.0
    ),
    "broken optimiser": Regime("underfitting", 128, 64, 200, optimizer="spiked", step=0.5),
}


def _data(name: str, quick: bool):
    if name == "digits":
        s = digits(dtype=torch.float64)
        x, xt = s.X_train.reshape(len(s.X_train), -1), s.X_test.reshape(len(s.X_test), -1)
    else:
        s = fashion_mnist(n_train=2000, n_test=1000, flatten=True, dtype=torch.float64)
        x, xt = s.X_train, s.X_test
    mu = x.mean(0)
    x, xt = x - mu, xt - mu
    scale = x.norm(dim=1).mean()
    y = nn.functional.one_hot(s.y_train, 10).double() - 0.1
    yt = nn.functional.one_hot(s.y_test, 10).double() - 0.1
    n_val = 150 if quick else 500
    return x / scale, y, xt[:n_val] / scale, yt[:n_val]


#: Quick mode divides the data size, width and steps by these factors (floors 16, 16, 30).
QUICK_SHRINK = (2, 2, 2)


def _run(regime: Regime, x, y, xv, yv, quick: bool):
    n, width, steps = regime.n_train, regime.width, regime.steps
    if quick:
        a, b, c = QUICK_SHRINK
        n, width, steps = max(16, n // a), max(16, width // b), max(30, steps // c)
    x, y = x[:n], y[:n].clone()
    if regime.noise:
        g = torch.Generator().manual_seed(5)
        y = y + regime.noise * torch.randn(y.shape, generator=g, dtype=y.dtype)
    model = ntk_mlp(x.shape[1], width, y.shape[1], depth=2, act=regime.act, seed=0)
    lam = float(torch.linalg.eigvalsh(empirical_ntk(model, x, output="trace"))[-1])
    limit = 2 * y.numel() / lam  # the linearised model's stability limit for SGD
    if regime.optimizer == "adam":
        lr = regime.step

        def make(p):
            return torch.optim.Adam(p, lr=lr)
    elif regime.optimizer == "spiked":
        lr = regime.step * limit

        def make(p):
            return SpikedSGD(p, lr=lr)
    else:
        lr = regime.step * limit

        def make(p):
            return torch.optim.SGD(p, lr=lr)

    report = diagnose(
        model,
        x,
        y,
        xv,
        yv,
        steps=steps,
        lr=lr,
        optimizer=make,
        every=max(1, steps // 8),
        probe_size=min(n, 64),
    )
    return report, lr, n, width, steps


@register(
    "dynamics_diagnosis",
    title="Training diagnosis: lazy, feature learning, overfitting and underfitting told apart",
    area="dynamics",
)
def dynamics_diagnosis(quick: bool = True) -> Result:
    """Four designed runs on digits (and Fashion-MNIST in full mode), read by diagnose()."""
    sets = ("digits",) if quick else ("digits", "fashion-mnist")
    rows, figures, hits, total = [], [], 0, 0
    for set_name in sets:
        x, y, xv, yv = _data(set_name, quick)
        for name, regime in REGIMES.items():
            rep, lr, n, width, steps = _run(regime, x, y, xv, yv, quick)
            num = rep.numbers
            hit = rep.verdict == regime.intended
            hits += hit
            total += 1
            rows.append(
                [
                    set_name,
                    name,
                    regime.intended,
                    rep.verdict,
                    n,
                    width,
                    steps,
                    lr,
                    num["deviation"],
                    num["kernel_distance"],
                    num["train_loss"],
                    num["lin_train_loss"],
                    num["val_loss"],
                    num["lin_val_loss"],
                ]
            )
            figures.append((f"{set_name}, {name}: {rep.verdict} ({rep.reason})", rep.figure))
    ok = hits == total
    verdict = "reproduced" if ok else "not reproduced"
    if quick:
        verdict += " (quick mode: inconclusive at this size)"
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, row in enumerate(rows):
        ax.scatter(
            row[8],
            row[12] / row[13] if row[13] else float("nan"),
            label=f"{row[0]}: {row[1]} -> {row[3]}",
            color=f"C{i}",
        )
    ax.axvline(0.1, color="k", ls=":", lw=1)
    ax.axhline(1.0, color="k", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("output deviation from the linearised model")
    ax.set_ylabel("validation loss / linearised validation loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    summary = (
        "Claim (source 001): the linearised network is a baseline that tells lazy training "
        "(tracks it), beneficial feature learning (deviates, better validation), harmful "
        "overfitting (deviates, better training, worse validation) and optimisation failure "
        "(trains worse) apart. Ours: "
        + "; ".join(
            f"{r[0]} {r[1]} (intended {r[2]}): {r[3]}, deviation {r[8]:.3g}, train "
            f"{r[10]:.3g} vs linearised {r[11]:.3g}, validation {r[12]:.3g} vs {r[13]:.3g}"
            for r in rows
        )
        + f". diagnose() gave the intended verdict in {hits} of {total} runs. Verdict: "
        f"{verdict}."
    )
    claim = Claim(
        "The linearised network is a baseline that tells lazy training, beneficial feature "
        "learning, harmful overfitting and optimisation failure apart.",
        f"diagnose() returned the intended regime for {hits} of {total} designed runs",
        "reproduced" if ok else "not reproduced",
        source="001, the learning process: from dynamics to diagnosis",
    )
    return Result(
        name="dynamics_diagnosis",
        claims=[claim],
        title="Training diagnosis against the linearised model",
        summary=summary,
        tables=[
            Table(
                "Designed runs and their diagnosis",
                [
                    "data",
                    "run",
                    "intended",
                    "verdict",
                    "N",
                    "width",
                    "steps",
                    "lr",
                    "deviation",
                    "kernel distance",
                    "train",
                    "train (lin)",
                    "val",
                    "val (lin)",
                ],
                rows,
            )
        ],
        figures=[("Deviation and validation ratio of every run", fig), *figures],
        metrics={"runs with the intended verdict": float(hits), "runs": float(total)},
    )
