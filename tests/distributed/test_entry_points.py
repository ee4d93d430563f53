"""client= on the public NTK entry points gives the in-process result."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("distributed")

import kernelens
from kernelens.ntk import NTKOperator, spectrum


def _model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2)).double()


@pytest.mark.parametrize("output", ["full", "trace"])
def test_empirical_ntk_with_client(client, output):
    model = _model()
    x1 = torch.randn(30, 5, dtype=torch.float64)
    x2 = torch.randn(11, 5, dtype=torch.float64)
    for b in (None, x2):
        got = kernelens.empirical_ntk(model, x1, b, output=output, client=client)
        ref = kernelens.empirical_ntk(model, x1, b, output=output)
        assert float((got - ref).norm() / ref.norm()) < 1e-12


def test_empirical_ntk_with_client_still_refuses_batch_coupling(client):
    class Centred(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(5, 2).double()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.lin(x)
            return h - h.mean(0)

    with pytest.raises(ValueError, match="batch|couple|independent"):
        kernelens.empirical_ntk(Centred(), torch.randn(6, 5, dtype=torch.float64), client=client)


def test_ntk_operator_and_spectrum_with_client(client):
    model = _model()
    x = torch.randn(25, 5, dtype=torch.float64)
    op = NTKOperator(model, x, output="trace", client=client)
    assert op.backend == "distributed"
    ref = NTKOperator(model, x, output="trace")
    V = torch.randn(25, 3, dtype=torch.float64)
    assert float((op.matmat(V) - ref.matmat(V)).norm() / ref.matmat(V).norm()) < 1e-12
    s = spectrum(model, x, k=3, output="trace", client=client)
    r = spectrum(model, x, k=3, output="trace")
    assert torch.allclose(s.eigenvalues, r.eigenvalues, rtol=1e-9)
