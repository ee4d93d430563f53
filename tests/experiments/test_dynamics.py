"""Dynamics experiments: quick runs give results computed from the data."""

from __future__ import annotations

import math

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
