"""TrainingMonitor and diagnose: recorded quantities against independent computations, the
verdict rules, and input checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kernelens.dynamics import (
    VERDICTS,
    TrainingMonitor,
    centered_alignment,
    diagnose,
    kernel_distance,
    mse,
)
from kernelens.dynamics.diagnose import _decide
from kernelens.dynamics.monitor import HISTORY_KEYS
from kernelens.experiments.dynamics._nets import ntk_mlp
from kernelens.ntk import empirical_ntk


def net(width=16):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, 1)).double()


def ntk_net(width):
    return ntk_mlp(4, width, 1, depth=1, act=nn.Tanh, seed=0)


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return x, torch.sin(2 * x[:, :1])


def test_history_against_independent_values():
    model = net()
    x, y = data(20, 0)
    xv, yv = data(10, 1)
    k0 = empirical_ntk(model, x[:8], output="trace")
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    mon = TrainingMonitor(model, x[:8], y[:8], xv, yv, every=2, hessian=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(6):
        opt.zero_grad()
        mse(model(x), y).backward()
        opt.step()
        sched.step()
        mon.step(opt, x, y)
    h = mon.history
    assert set(h) == set(HISTORY_KEYS) | {"hessian_top"}
    assert h["step"] == [0.0, 2.0, 4.0, 6.0]
    assert all(len(v) == 4 for v in h.values())
    assert h["kernel_distance"][0] == pytest.approx(0.0, abs=1e-14)
    assert math.isnan(h["kernel_velocity"][0])
    kt = empirical_ntk(model, x[:8], output="trace")
    assert h["kernel_distance"][-1] == pytest.approx(kernel_distance(k0, kt), rel=1e-10)
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert h["param_distance"][-1] == pytest.approx(
        float((theta - theta0).norm() / theta0.norm()), rel=1e-10
    )
    assert h["train_loss"][-1] == pytest.approx(float(mse(model(x[:8]), y[:8]).detach()), rel=1e-10)
    assert h["val_loss"][-1] == pytest.approx(float(mse(model(xv), yv).detach()), rel=1e-10)
    assert mon._opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]  # scheduler followed
    # the Hessian top eigenvalue against a dense Hessian
    params = dict(model.named_parameters())
    names = list(params)
    flat = torch.cat([params[n].detach().reshape(-1) for n in names])

    def loss_of(v):
        vals, i = {}, 0
        for n in names:
            vals[n] = v[i : i + params[n].numel()].reshape(params[n].shape)
            i += params[n].numel()
        out = torch.func.functional_call(model, vals, (x[:8],))
        return mse(out, y[:8])

    hess = torch.autograd.functional.hessian(loss_of, flat)
    assert h["hessian_top"][-1] == pytest.approx(float(torch.linalg.eigvalsh(hess)[-1]), rel=1e-6)


def test_centered_alignment_and_distance():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(6, 2, generator=g, dtype=torch.float64)
    yc = y - y.mean(0)
    assert centered_alignment(y @ y.T + 5.0, y) == pytest.approx(1.0, abs=1e-12)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    k = a @ a.T
    h = torch.eye(6, dtype=torch.float64) - 1 / 6
    ref = (h @ k @ h * (yc @ yc.T)).sum() / ((h @ k @ h).norm() * (yc @ yc.T).norm())
    assert centered_alignment(k, y) == pytest.approx(float(ref), rel=1e-12)
    assert kernel_distance(k, 3 * k) == pytest.approx(0.0, abs=1e-14)


def test_linearised_copy_follows_its_own_dynamics():
    """The monitor's linear copy equals a separately trained linearize() copy."""
    from kernelens.dynamics import linearize

    model = net()
    x, y = data(12, 0)
    ref = linearize(model)
    mon = TrainingMonitor(model, x, y)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.01)
    for _ in range(5):
        opt.zero_grad()
        mse(model(x), y).backward()
        opt.step()
        mon.step(opt, x, y)
        ref_opt.zero_grad()
        mse(ref(x), y).backward()
        ref_opt.step()
    torch.testing.assert_close(mon.linear(x), ref(x))


def test_wide_small_step_is_lazy_and_narrow_large_step_is_not():
    x, y = data(32, 0)
    xv, yv = data(32, 1)
    lazy = diagnose(ntk_net(2048), x, y, xv, yv, steps=40, lr=0.5, every=20, probe_size=16)
    assert lazy.verdict == "lazy", lazy
    assert lazy.numbers["deviation"] < 0.1
    rough = diagnose(ntk_net(8), x, y, xv, yv, steps=150, lr=3.0, every=50, probe_size=16)
    assert rough.verdict != "lazy", rough
    assert rough.figure is not None


@pytest.mark.parametrize(
    ("numbers", "verdict"),
    [
        ({"deviation": 0.01, "train_loss": 1.0, "lin_train_loss": 1.0}, "lazy"),
        ({"deviation": 0.5, "train_loss": 2.0, "lin_train_loss": 1.0}, "underfitting"),
        ({"deviation": 0.01, "train_loss": math.nan, "lin_train_loss": 1.0}, "underfitting"),
        ({"deviation": 0.5, "val_loss": 0.5, "lin_val_loss": 1.0}, "feature_learning"),
        ({"deviation": 0.5, "val_loss": 0.5, "lin_val_loss": math.inf}, "feature_learning"),
        ({"deviation": 0.5, "val_loss": 2.0, "lin_val_loss": 1.0}, "overfitting"),
        ({"deviation": 0.5, "val_loss": 1.05, "lin_val_loss": 1.0}, "inconclusive"),
        ({"deviation": 0.5, "val_loss": math.nan, "lin_val_loss": math.nan}, "inconclusive"),
        # both fitted to below the floor (1e-3 x initial 1.0): equal, not underfitting
        ({"deviation": 0.5, "train_loss": 1e-6, "lin_train_loss": 1e-9}, "inconclusive"),
    ],
)
def test_verdict_rules(numbers, verdict):
    n = {"train_loss": 0.1, "lin_train_loss": 0.1, "val_loss": 1.0, "lin_val_loss": 1.0}
    n["initial_train_loss"] = 1.0
    n.update(numbers)
    got, reason = _decide(n, 0.1, 0.1)
    assert got == verdict and got in VERDICTS and reason


def test_errors():
    model = net()
    x, y = data(6, 0)
    with pytest.raises(ValueError, match="rows"):
        TrainingMonitor(model, x, y[:-1])
    with pytest.raises(ValueError, match="both x_val and y_val"):
        TrainingMonitor(model, x, y, x_val=x)
    mon = TrainingMonitor(model, x, y)
    with pytest.raises(ValueError, match="no training step"):
        diagnose(mon)
    other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="not a trainable parameter"):
        mon.step(other, x, y)
    with pytest.raises(TypeError, match="TrainingMonitor or an nn.Module"):
        diagnose("run")
