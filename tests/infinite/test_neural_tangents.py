"""kernelens.infinite against neural-tangents 0.6.5 (float64 fixtures written by
benchmarks/make_infinite_fixtures.py from the same JSON layer specs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import kernelens.infinite as inf

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.npz"))


def build(spec):
    name, args = spec
    if name in ("serial", "parallel"):
        return getattr(inf, name)(*[build(s) for s in args])
    return getattr(inf, name)(**args)


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_matches_neural_tangents(path):
    data = np.load(path)
    net = inf.serial(*[build(s) for s in json.loads(str(data["spec"]))])
    x1, x2 = torch.from_numpy(data["x1"]), torch.from_numpy(data["x2"])
    k = net.kernel(x1, x2)
    for name in ("nngp", "ntk"):
        ref = data[name]
        got = getattr(k, name).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
    sym = net.kernel(x1)
    n = x1.shape[0]
    off = ~np.eye(n, dtype=bool)
    for name in ("nngp", "ntk"):
        ref = data[f"{name}_sym"]
        got = getattr(sym, name).numpy()
        np.testing.assert_allclose(got[off], ref[off], rtol=1e-10, atol=1e-10 * np.abs(ref).max())
        # neural-tangents' angle at x = x' is atan2(sqrt(q^2 - c^2), c) with c = q (1 +- ulp):
        # ~1e-8 instead of 0, so its own diagonal carries ~1e-9 relative error; ours is exact
        np.testing.assert_allclose(np.diag(got), np.diag(ref), rtol=1e-8)


def test_fixtures_present():
    assert len(FIXTURES) >= 19
