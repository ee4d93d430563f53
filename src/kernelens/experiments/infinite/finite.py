"""Experiment 8 (seed 001): finite against infinite networks on digits and Fashion-MNIST.

Claim (seed): in the infinite-width limit training is kernel regression with the (analytic) NTK;
finite networks approach it. We compare test accuracy of kernel regression (one-hot targets,
ridgeless up to a 1e-6 relative jitter) with the analytic NTK and NNGP of a ReLU MLP, with the
empirical NTK of the built network at initialisation, and of the same built network trained by
full-batch gradient descent on the squared loss.
"""

from __future__ import annotations

import torch

import kernelens.infinite as inf

from ...data import digits, fashion_mnist
from ...ntk import empirical_ntk
from ..registry import register
from ..result import Claim, Result, Table
from ._common import verdict

__all__ = ["finite_vs_infinite"]


def _krr(k_train, k_test, y):
    reg = 1e-6 * k_train.diagonal().mean()
    eye = torch.eye(len(k_train), dtype=k_train.dtype)
    return k_test @ torch.linalg.solve(k_train + reg * eye, y)


def _accuracy(pred, labels) -> float:
    return float((pred.argmax(1) == labels).double().mean())


def _prepare(split, n_train, n_test):
    # at most what the split holds (digits has 450 test images)
    n_train, n_test = min(n_train, len(split.X_train)), min(n_test, len(split.X_test))
    xtr = split.X_train[:n_train].reshape(n_train, -1).double()
    xte = split.X_test[:n_test].reshape(n_test, -1).double()
    mean, scale = xtr.mean(0), xtr.std() + 1e-12
    return (
        (xtr - mean) / scale,
        (xte - mean) / scale,
        split.y_train[:n_train],
        split.y_test[:n_test],
    )


@register("finite_vs_infinite", title="Finite against infinite networks (digits, Fashion-MNIST)",
          area="infinite")  # fmt: skip
def finite_vs_infinite(quick: bool = True) -> Result:
    n_train, n_test = (100, 100) if quick else (1000, 1000)
    width = 256 if quick else 2048
    steps = 100 if quick else 2000
    sets = {"digits": digits(dtype=torch.float64)}
    if not quick:  # quick mode: digits only
        sets["Fashion-MNIST"] = fashion_mnist(n_train, n_test, dtype=torch.float64)
    rows, metrics = [], {}
    for name, split in sets.items():
        xtr, xte, ytr, yte = _prepare(split, n_train, n_test)
        onehot = torch.nn.functional.one_hot(ytr, 10).double()
        net = inf.serial(inf.Dense(width, W_std=1.4, b_std=0.1), inf.Relu(),
                         inf.Dense(width, W_std=1.4, b_std=0.1), inf.Relu(),
                         inf.Dense(10, W_std=1.4, b_std=0.1))  # fmt: skip
        ktr, kte = net.kernel(xtr), net.kernel(xte, xtr)
        acc_ntk = _accuracy(_krr(ktr.ntk, kte.ntk, onehot), yte)
        acc_nngp = _accuracy(_krr(ktr.nngp, kte.nngp, onehot), yte)
        model = net.build((xtr.shape[1],), seed=0, dtype=torch.float64)
        etr = empirical_ntk(model, xtr, output="trace") / 10
        ete = empirical_ntk(model, xte, xtr, output="trace") / 10
        acc_emp = _accuracy(_krr(etr, ete, onehot), yte)
        kernel_gap = float((etr - ktr.ntk).norm() / ktr.ntk.norm())
        # gradient descent at half the linearised stability limit 2 N / lambda_max
        lam = float(torch.linalg.eigvalsh(ktr.ntk)[-1])
        opt = torch.optim.SGD(model.parameters(), lr=n_train / lam)
        for _ in range(steps):
            loss = 0.5 * ((model(xtr) - onehot) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc_trained = _accuracy(model(xte), yte)
            train_acc = _accuracy(model(xtr), ytr)
        rows.append([name, n_train, width, acc_ntk, acc_nngp, acc_emp, acc_trained, train_acc,
                     kernel_gap])  # fmt: skip
        metrics |= {f"{name} analytic NTK accuracy": acc_ntk,
                    f"{name} trained network accuracy": acc_trained,
                    f"{name} empirical NTK accuracy": acc_emp}  # fmt: skip
    ok = all(abs(r[3] - r[5]) < 0.05 and abs(r[3] - r[6]) < 0.1 for r in rows)
    metrics["reproduced"] = float(ok)
    summary = (
        "Claim (seed 001): wide networks train like kernel regression with their NTK. Test "
        f"accuracy ({n_train} training / up to {n_test} test images (digits has 450), width-{width} ReLU MLP): "
        + "; ".join(
            f"{r[0]}: analytic NTK {r[3]:.3f}, NNGP {r[4]:.3f}, empirical NTK at init "
            f"{r[5]:.3f} (kernel {r[8]:.1%} from the analytic one), trained network {r[6]:.3f} "
            f"(train accuracy {r[7]:.2f} after {steps} full-batch steps)"
            for r in rows
        )
        + ". Kernel regression with the analytic NTK predicts the accuracy of the empirical "
        "kernel and of the trained finite network to within the differences shown. Verdict: "
        f"{verdict(ok, quick)}."
    )
    claim = Claim(
        "In the infinite-width limit training is kernel regression with the NTK: wide "
        "networks train like it.",
        "; ".join(
            f"{r[0]}: analytic NTK {r[3]:.3f}, empirical NTK {r[5]:.3f}, trained network "
            f"{r[6]:.3f} test accuracy"
            for r in rows
        ),
        "reproduced" if ok else "not reproduced",
        source="001, the infinite-width limit and lazy training",
    )
    return Result(
        name="finite_vs_infinite",
        claims=[claim],
        title="Finite against infinite networks (digits, Fashion-MNIST)",
        summary=summary,
        tables=[Table("Test accuracy",
                      ["data", "n train", "width", "analytic NTK", "analytic NNGP",
                       "empirical NTK (init)", "trained network", "train accuracy",
                       "empirical vs analytic NTK"], rows)],
        figures=[],
        metrics=metrics,
    )  # fmt: skip
