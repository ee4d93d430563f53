"""The infinite-width experiments run in quick mode and reach their computed verdicts.

They are called directly (not through the registry's loader, which imports every area)."""

from __future__ import annotations

import pytest

from kernelens.experiments import registry
from kernelens.experiments.infinite import (
    architecture,
    dropout,
    finite,
    normalisation,
    pca,
    smoothness,
)

FAST = {
    "dropout_kernel_factor": dropout.dropout_kernel_factor,
    "pooling_invariance": architecture.pooling_invariance,
    "normalisation_centring": normalisation.normalisation_centring,
}
SLOW = {
    "activation_smoothness": smoothness.activation_smoothness,
    "ordered_chaotic": architecture.ordered_chaotic,
    "pca_learning_speed": pca.pca_learning_speed,
    "finite_vs_infinite": finite.finite_vs_infinite,
}


def test_registered_under_infinite():
    names = {n for n, e in registry._REGISTRY.items() if e.area == "infinite"}
    assert {*FAST, *SLOW, "residual_spectrum"} <= names


def _run(fn):
    result = fn(True)
    assert result.tables and result.tables[0].rows and result.figures
    assert "Claim" in result.summary and "Verdict" in result.summary.replace("verdict", "Verdict")
    return result


@pytest.mark.parametrize("name", sorted(FAST))
def test_quick_reproduces(name):
    assert _run(FAST[name]).metrics["reproduced"] == 1.0


def test_residual_quick_runs():
    m = _run(architecture.residual_spectrum).metrics
    # branches scaled by 1 / sqrt(depth) keep the kernel better conditioned than no skips
    assert m["scaled residual nngp condition (deepest)"] < m["plain nngp condition (deepest)"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW))
def test_slow_quick_reproduces(name):
    assert _run(SLOW[name]).metrics["reproduced"] == 1.0
