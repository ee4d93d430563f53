"""The one kernel resolver: names, instances, bandwidth and kernel_params."""

import pytest
import torch

from kernelens.kernels import (
    KernelRidge,
    LaplaceKernel,
    LinearKernel,
    MahalanobisLaplaceKernel,
    PolynomialKernel,
    resolve_kernel,
)


def test_names_and_default_bandwidth():
    k = resolve_kernel("gaussian")
    assert type(k).__name__ == "GaussianKernel" and k.bandwidth == 1.0
    assert resolve_kernel("laplace", 2.5).bandwidth == 2.5
    assert resolve_kernel("laplace", None, {"bandwidth": 3.0}).bandwidth == 3.0
    M = torch.eye(3, dtype=torch.float64) * 0.5
    k = resolve_kernel("mahalanobis_laplace", 2.0, {"M": M})
    assert isinstance(k, MahalanobisLaplaceKernel) and k.bandwidth == 2.0
    assert torch.equal(k.M, M)
    p = resolve_kernel("polynomial", None, {"degree": 2})
    assert isinstance(p, PolynomialKernel) and p.degree == 2


def test_instances_keep_or_replace_their_bandwidth():
    inst = LaplaceKernel(5.0)
    assert resolve_kernel(inst) is inst
    other = resolve_kernel(inst, 3.0)
    assert other is not inst and other.bandwidth == 3.0 and inst.bandwidth == 5.0
    bw = torch.tensor(2.0, requires_grad=True)
    learned = resolve_kernel("laplace", bw)
    X = torch.randn(4, 2)
    learned(X).sum().backward()
    assert bw.grad is not None


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="given twice"):
        resolve_kernel("laplace", 2.0, {"bandwidth": 3.0})
    with pytest.raises(ValueError, match="kernel_params"):
        resolve_kernel(LaplaceKernel(), None, {"M": torch.eye(2)})
    with pytest.raises(ValueError, match="has no bandwidth"):
        resolve_kernel("linear", 2.0)
    with pytest.raises(ValueError, match="has no bandwidth"):
        resolve_kernel(LinearKernel(), 2.0)
    with pytest.raises(ValueError, match="unknown kernel"):
        resolve_kernel("rbf")
    with pytest.raises(TypeError, match="kernel must be"):
        resolve_kernel(3)
    with pytest.raises(ValueError, match="bandwidth"):
        resolve_kernel("laplace", -1.0)


def test_estimator_bandwidth_replaces_an_instance_bandwidth():
    X = torch.randn(30, 3, dtype=torch.float64)
    y = X[:, 0].sin()
    a = KernelRidge(LaplaceKernel(5.0), bandwidth=2.0, alpha=0.1).fit(X, y)
    b = KernelRidge("laplace", bandwidth=2.0, alpha=0.1).fit(X, y)
    c = KernelRidge(LaplaceKernel(5.0), alpha=0.1).fit(X, y)
    torch.testing.assert_close(a.predict(X), b.predict(X))
    assert c.kernel_.bandwidth == 5.0
