"""Seed 004, predictive variance as an error flag: AUROC and the small experiment."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernelens.experiments import run_experiment
from kernelens.experiments.sparse.backbones import backbone_features
from kernelens.experiments.sparse.variance import auroc, error_scores


def _pairwise_auroc(s, pos):
    p, n = s[pos], s[~pos]
    return float(((p[:, None] > n[None]) + 0.5 * (p[:, None] == n[None])).mean())


def test_auroc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 200).astype(float)  # many ties
    pos = rng.random(200) < 0.3
    assert math.isclose(auroc(s, pos), _pairwise_auroc(s, pos), rel_tol=1e-12)
    assert auroc(np.arange(4.0), np.array([0, 0, 1, 1], bool)) == 1.0
    assert math.isnan(auroc(s, np.zeros(200, bool)))


def test_error_scores_dense_limit_equals_exact_gp():
    f = backbone_features("cnn", 0, n_train=400, n_test=100, epochs=1)
    out = error_scores(f, 120, [8, 120], n_fit=60)
    # k = m: the SK variance is the exact GP's, so both rank the same errors identically
    assert math.isclose(
        out["SK variance k=120"][0], out["exact GP std (same kernel), SK errors"][0], abs_tol=1e-9
    )
    assert all(0.0 <= a <= 1.0 and 0.1 < acc <= 1.0 for a, acc in out.values())
    assert out["SK variance k=8"][0] != out["SK variance k=120"][0]


@pytest.mark.slow
def test_registered_quick_run():
    r = run_experiment("sparse_variance", quick=True)
    assert r.quick and "inconclusive (quick mode)" in r.summary
    assert all(math.isfinite(v) for v in r.metrics.values())
