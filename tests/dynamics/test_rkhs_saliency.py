"""rkhs_norm against a direct solve and pseudo-inverse; the NTK diagonal and saliency against
dense references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from kernelens.dynamics import ntk_diagonal, rkhs_norm, saliency_vs_ntk_diagonal
from kernelens.ntk import empirical_ntk


def test_rkhs_norm_against_solve_and_pinv():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 12, generator=g, dtype=torch.float64)
    k = a @ a.T
    y = torch.randn(8, 2, generator=g, dtype=torch.float64)
    r = rkhs_norm(k, y)
    ref = float((y * torch.linalg.solve(k, y)).sum())
    assert r.value == pytest.approx(ref, rel=1e-10)
    assert r.n_dropped == 0
    assert torch.all(r.eigenvalues[:-1] >= r.eigenvalues[1:])
    assert float(r.contributions.sum()) == pytest.approx(r.value, rel=1e-12)
    # a rank-3 kernel: five modes dropped, value = y^T K^+ y
    b = a[:, :3]
    low = b @ b.T
    r = rkhs_norm(low, y[:, 0])
    assert r.n_dropped == 5
    pinv = torch.linalg.pinv(low, hermitian=True, rtol=1e-12)
    assert r.value == pytest.approx(float(y[:, 0] @ pinv @ y[:, 0]), rel=1e-8)
    # rcond drops more modes
    assert rkhs_norm(k, y, rcond=0.5).n_dropped > 0
    with pytest.raises(ValueError, match="positive semi-definite"):
        rkhs_norm(-k, y)
    with pytest.raises(ValueError, match="rows"):
        rkhs_norm(k, y[:3])


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc = nn.Linear(3 * 5 * 5, 2)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_saliency_against_dense_references(arch):
    torch.manual_seed(0)
    if arch == "mlp":
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        x = torch.randn(10, 5, dtype=torch.float64)
    else:
        model = CNN().double()
        x = torch.randn(10, 1, 7, 7, dtype=torch.float64)
    r = saliency_vs_ntk_diagonal(model, x)
    torch.testing.assert_close(r.ntk_diagonal, empirical_ntk(model, x, output="trace").diagonal())
    jac = torch.stack(
        [torch.autograd.functional.jacobian(lambda z: model(z[None])[0], xi) for xi in x]
    )
    torch.testing.assert_close(r.input_grads, jac)
    sal = jac.reshape(10, -1).norm(dim=1)
    torch.testing.assert_close(r.saliency, sal)
    assert r.pearson == pytest.approx(float(np.corrcoef(r.ntk_diagonal, sal)[0, 1]), rel=1e-10)
    assert r.spearman == pytest.approx(stats.spearmanr(r.ntk_diagonal, sal).statistic, rel=1e-10)
    torch.testing.assert_close(ntk_diagonal(model, x), r.ntk_diagonal)


def test_saliency_errors():
    model = nn.Linear(3, 1)
    with pytest.raises(ValueError, match="at least 3"):
        saliency_vs_ntk_diagonal(model, torch.randn(2, 3))
    with pytest.raises(ValueError, match="constant"):
        saliency_vs_ntk_diagonal(model, torch.randn(5, 3))  # linear: constant gradients
