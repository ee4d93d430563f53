"""Scale: a 10,000 x 10,000 trace NTK of a small MLP within a memory budget (slow)."""

from __future__ import annotations

import pytest
import torch
from ntk_models import reference_ntk
from torch import nn

from kernelens import empirical_ntk


@pytest.mark.slow
def test_trace_ntk_10k_within_budget():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 2))
    x = torch.randn(10_000, 10)
    K = empirical_ntk(model, x, output="trace", memory_budget=32 << 20)
    assert K.shape == (10_000, 10_000)
    assert torch.allclose(K, K.T)
    idx = torch.tensor([0, 17, 4_999, 9_998])
    ref = reference_ntk(model.double(), x[idx].double(), output="trace")
    assert torch.allclose(K[idx][:, idx].double(), ref, rtol=1e-4, atol=1e-4)
