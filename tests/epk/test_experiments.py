"""The EPK experiments in quick mode: they run, and their headline numbers hold."""

from __future__ import annotations

import math

import pytest

from kernelens.experiments import Result, run_experiment


def _run(name: str) -> Result:
    result = run_experiment(name, quick=True)
    assert result.tables and result.figures and result.summary
    return result


def test_toy():
    m = _run("epk_toy").metrics
    assert m["two_moons_max_rel_error"] < 1e-10
    assert m["two_moons_mean_abs_spearman_kernel_vs_distance"] < 0.95  # not a distance kernel
    assert m["two_moons_top10_margin_ratio"] < 1.0  # influential points near the boundary


@pytest.mark.slow
def test_tracin():
    m = _run("epk_tracin").metrics
    assert m["reconstruction_error[EPK (exact path integral)]"] < 1e-10
    assert m["reconstruction_error[TracIn-CP, checkpoint each epoch]"] > 1e-3
    assert m["spearman[TracIn-CP, checkpoint each epoch]"] < 1.0


@pytest.mark.slow
def test_optimizers():
    m = _run("epk_optimizers").metrics
    for opt in ("sgd", "momentum", "adam"):
        assert m[f"{opt}_max_rel_error"] < 1e-10


@pytest.mark.slow
def test_fashion_mnist():
    m = _run("epk_fashion_mnist").metrics
    assert m["max_rel_error"] < 1e-10
    assert m["test_accuracy"] > 0.3
    assert math.isfinite(m["auroc_variance_wrong"])
