"""The distributed operators pass the LinearOperator contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("distributed")

from kernelens.distributed import DistributedKernelOperator, DistributedNTKOperator
from kernelens.kernels import make_kernel
from kernelens.linalg.testing import LinearOperatorContract
from kernelens.ntk import empirical_ntk


class _WithClient(LinearOperatorContract):
    @pytest.fixture(autouse=True)
    def _client(self, client):
        type(self).client = client


class TestDistributedKernelOperator(_WithClient):
    def make(self):
        X = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        k = make_kernel("laplace", bandwidth=2.0)
        return DistributedKernelOperator(k, X, None, client=self.client), k(X)


class TestDistributedRectangularKernelOperator(_WithClient):
    def make(self):
        g = torch.Generator().manual_seed(1)
        X = torch.randn(40, 3, generator=g, dtype=torch.float64)
        Z = torch.randn(15, 3, generator=g, dtype=torch.float64)
        k = make_kernel("gaussian", bandwidth=2.0)
        return DistributedKernelOperator(k, Z, X, client=self.client), k(Z, X)


class TestDistributedNTKOperator(_WithClient):
    def make(self):
        torch.manual_seed(2)
        model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()
        x = torch.randn(12, 3, dtype=torch.float64)
        op = DistributedNTKOperator(model, x, client=self.client, outputs=1, output="trace")
        return op, empirical_ntk(model, x, method="jacobian", output="trace")
