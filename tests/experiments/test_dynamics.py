"""Dynamics experiments: quick runs give results computed from the data."""

from __future__ import annotations

import math

import pytest

from kernelens.experiments import run_experiment


def test_data_geometry_quick():
    r = run_experiment("dynamics_data_geometry", quick=True)
    m = r.metrics
    assert r.quick and r.figures and r.tables[0].rows
    assert m["tight norm ratio noisy/clean"] > 10 * m["separated norm ratio noisy/clean"]
    assert m["tight near-zero eigenvalues"] > m["separated near-zero eigenvalues"]
    assert m["tight interpolant range"] > m["separated interpolant range"]
    assert "Claim" in r.summary and "Verdict" in r.summary
    assert all(math.isfinite(v) for v in m.values())


def test_spectrum_speed_uses_the_dynamics_prediction():
    import numpy as np
    import torch
    from torch import nn

    from kernelens.experiments.ntk.spectrum_speed import _data, _run

    X, y = _data(30)
    r = _run(nn.Tanh, X, y, width=256, steps=40)
    # gradient_descent_mse's per-mode factors are (1 - eta lambda_k / N)^t
    closed = np.abs(1 - r["lr"] * r["evals"] / 30) ** 40
    np.testing.assert_allclose(r["predicted"], closed, rtol=1e-8, atol=1e-14)
    assert r["output_gap"] < 0.1
    torch.testing.assert_close(torch.tensor(r["factors"][0]), torch.ones(30, dtype=torch.float64))


def test_universality_quick():
    r = run_experiment("dynamics_universality", quick=True)
    rows = r.tables[0].rows
    for target in {row[0] for row in rows}:
        errs = [row[2] for row in rows if row[0] == target]
        assert errs[-1] < errs[0]  # more points, smaller sup error
    assert all(v < 0.1 for k, v in r.metrics.items() if "sup error" in k)
    assert "Claim" in r.summary and "Verdict" in r.summary


def test_saliency_quick():
    r = run_experiment("dynamics_saliency", quick=True)
    rows = r.tables[0].rows
    assert [row[0] for row in rows] == ["initialisation", "trained"]
    assert all(-1 <= row[1] <= 1 and -1 <= row[2] <= 1 for row in rows)
    assert r.figures and "Verdict" in r.summary


def test_qec_quick():
    pytest.importorskip("stim")
    pytest.importorskip("pymatching")
    from kernelens.experiments.dynamics.qec import wilson_interval

    lo, hi = wilson_interval(5, 100)
    assert lo < 0.05 < hi and 0 <= lo and hi <= 1
    r = run_experiment("dynamics_qec", quick=True)
    rows = r.tables[0].rows
    assert {row[3] for row in rows} >= {"matching", "NTK analytic", "no correction"}
    for row in rows:
        assert 0 <= row[5] <= row[4] <= row[6] <= 1
    # matching, the standard decoder, beats no correction on every setting
    for code in {row[0] for row in rows}:
        rate = {row[3]: row[4] for row in rows if row[0] == code}
        assert rate["matching"] < rate["no correction"]
    assert "Verdict" in r.summary


def test_spiked_sgd_clone_keeps_the_bug():
    import torch

    from kernelens.dynamics import TrainingMonitor, mse
    from kernelens.experiments.dynamics._nets import ntk_mlp
    from kernelens.experiments.dynamics.diagnosis import SpikedSGD

    model = ntk_mlp(3, 8, depth=1)
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.randn(6, 1, dtype=torch.float64)
    opt = SpikedSGD(model.parameters(), lr=0.01, spike=100.0)
    mon = TrainingMonitor(model, x, y)
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    mse(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    mon.step(opt, x, y)
    for p, b, g in zip(model.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), b - 1.0 * g)  # lr x spike on step 1
    assert isinstance(mon._opt, SpikedSGD) and mon._opt.param_groups[0]["spike"] == 100.0
    assert opt.param_groups[0]["lr"] == 0.01  # restored after the spike


@pytest.mark.slow
def test_diagnosis_quick():
    r = run_experiment("dynamics_diagnosis", quick=True)
    rows = r.tables[0].rows
    assert len(rows) == 4 and {row[3] for row in rows} <= {
        "lazy",
        "feature_learning",
        "overfitting",
        "underfitting",
        "inconclusive",
    }
    lazy = next(row for row in rows if row[2] == "lazy")
    assert lazy[3] == "lazy"
    assert "Verdict" in r.summary
