"""The kernel baselines experiment (quick mode) runs and gives sane numbers."""

from __future__ import annotations

from kernelens.experiments import run_experiment


def test_kernel_baselines_quick():
    r = run_experiment("kernel_baselines", quick=True)
    assert r.quick and r.figures and r.tables
    # digits is easy for any sensible kernel machine; Fashion-MNIST at n=1000 is ~0.8
    assert r.metrics["digits KRR Laplace acc"] > 0.95
    assert r.metrics["fashion-mnist KRR Gaussian acc"] > 0.72
    # the linear kernel is clearly worse than the nonlinear ones on Fashion-MNIST
    assert r.metrics["fashion-mnist KRR linear acc"] < r.metrics["fashion-mnist KRR Laplace acc"]
