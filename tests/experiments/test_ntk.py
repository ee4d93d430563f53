"""NTK experiments: a small version of the spectrum / learning-speed run, and the registered
quick run (slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kernelens.experiments import run_experiment
from kernelens.experiments.ntk.spectrum_speed import _data, _run


def test_lazy_tanh_network_follows_the_linearised_decay():
    torch.set_num_threads(1)
    X, y = _data(40)
    r = _run(nn.Tanh, X, y, width=256, steps=60)
    assert r["kernel_change"] < 0.05
    # leading directions decay as (1 - eta lambda_k / N)^t within a few percent
    assert np.abs(r["measured"][1:6] - r["predicted"][1:6]).max() < 0.05
    # larger eigenvalue, faster decay (the leading, well-separated directions)
    assert np.all(np.diff(r["measured"][:6]) > 0)


@pytest.mark.slow
def test_registered_quick_run():
    result = run_experiment("ntk_spectrum_speed", quick=True)
    assert result.metrics["tanh spearman(lambda, measured rate) top-20"] > 0.8
    assert result.metrics["tanh kernel relative change"] < 0.05
    assert result.tables[0].rows and result.figures
