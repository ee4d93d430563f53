"""Every LinearOperator kernelens has passes the operator contract (kernelens.linalg.testing)."""

from __future__ import annotations

import torch
from torch import nn

from kernelens.kernels import make_kernel
from kernelens.linalg import DenseOperator, DiagonalOperator, IdentityOperator, LinearOperator
from kernelens.linalg.kernel_solve import kernel_operator
from kernelens.linalg.testing import LinearOperatorContract
from kernelens.ntk import NTKOperator, empirical_ntk


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class TestDenseOperator(LinearOperatorContract):
    def make(self):
        A = torch.randn(7, 5, generator=_g(0), dtype=torch.float64)
        return DenseOperator(A), A.clone()


class TestSymmetricDenseOperator(LinearOperatorContract):
    def make(self):
        B = torch.randn(6, 6, generator=_g(1), dtype=torch.float64)
        A = B + B.T
        return DenseOperator(A, symmetric=True), A.clone()


class TestDiagonalOperator(LinearOperatorContract):
    def make(self):
        d = torch.randn(6, generator=_g(2), dtype=torch.float64)
        return DiagonalOperator(d), torch.diag(d)


class TestIdentityOperator(LinearOperatorContract):
    def make(self):
        return IdentityOperator(5, dtype=torch.float64), torch.eye(5, dtype=torch.float64)


class TestGeneralOperator(LinearOperatorContract):
    def make(self):
        A = torch.randn(4, 6, generator=_g(3), dtype=torch.float64)
        op = LinearOperator(A.shape, lambda V: A @ V, rmatmat=lambda U: A.T @ U, dtype=A.dtype)
        return op, A.clone()


class TestProductOperator(LinearOperatorContract):
    def make(self):
        A = torch.randn(5, 3, generator=_g(4), dtype=torch.float64)
        B = torch.randn(3, 6, generator=_g(5), dtype=torch.float64)
        return DenseOperator(A) @ DenseOperator(B), A @ B


class TestKernelOperator(LinearOperatorContract):
    def make(self):
        X = torch.randn(40, 3, generator=_g(6), dtype=torch.float64)
        k = make_kernel("laplace", bandwidth=2.0)
        return k.operator(X, memory_budget=1 << 20), k(X)


class TestRectangularKernelOperator(LinearOperatorContract):
    def make(self):
        X = torch.randn(30, 3, generator=_g(7), dtype=torch.float64)
        Z = torch.randn(12, 3, generator=_g(8), dtype=torch.float64)
        k = make_kernel("gaussian", bandwidth=1.5)
        return k.operator(Z, X), k(Z, X)


class TestCallableKernelOperator(LinearOperatorContract):
    def make(self):
        X = torch.randn(25, 2, generator=_g(9), dtype=torch.float64)

        def poly(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (1 + a @ b.T) ** 2

        return kernel_operator(poly, X, memory_budget=1 << 20), poly(X, X)


def _ntk_model() -> nn.Module:
    torch.manual_seed(10)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()


def _full_matrix(K: torch.Tensor) -> torch.Tensor:
    n, _, o, _ = K.shape
    return K.permute(0, 2, 1, 3).reshape(n * o, n * o)


class TestNTKOperatorFactors(LinearOperatorContract):
    def make(self):
        model, x = _ntk_model(), torch.randn(9, 3, generator=_g(11), dtype=torch.float64)
        op = NTKOperator(model, x, output="full", backend="factors")
        return op, _full_matrix(empirical_ntk(model, x, method="jacobian"))


class TestNTKOperatorNtvpTrace(LinearOperatorContract):
    def make(self):
        model, x = _ntk_model(), torch.randn(9, 3, generator=_g(12), dtype=torch.float64)
        op = NTKOperator(model, x, output="trace", backend="ntvp")
        return op, empirical_ntk(model, x, method="jacobian", output="trace")
