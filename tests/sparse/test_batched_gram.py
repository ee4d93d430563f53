"""Batched local Grams (kernelens.kernels.batched, used by sparse) against the kernel classes'
own Grams, one Gram at a time; the formulas are the classes' own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernelens import sparse
from kernelens.kernels import KERNELS, GaussianKernel, Kernel, make_kernel, squared_distances
from kernelens.kernels.batched import batched_gram, batched_squared_distances


def _psd(d, seed=1):
    g = np.random.default_rng(seed)
    A = g.normal(size=(d, d))
    return torch.from_numpy(A @ A.T / d)


KERNEL_PARAMS = {
    "laplace": {"bandwidth": 1.3},
    "gaussian": {"bandwidth": 1.3},
    "product_laplace": {"bandwidth": 1.3},
    "mahalanobis_laplace": {"bandwidth": 1.3, "M": _psd(4)},
    "mahalanobis_gaussian": {"bandwidth": 1.3, "M": _psd(4)},
    "linear": {},
    "polynomial": {"degree": 3, "coef0": 1.0},
}


def test_every_registered_kernel_is_covered():
    assert set(KERNEL_PARAMS) == set(KERNELS)


@pytest.mark.parametrize("name", sorted(KERNEL_PARAMS))
def test_batched_gram_matches_kernel_per_batch(name):
    kernel = make_kernel(name, **KERNEL_PARAMS[name])
    A = torch.randn(5, 6, 4, dtype=torch.float64) + 3.0
    C = torch.randn(5, 3, 4, dtype=torch.float64) + 3.0
    got = batched_gram(kernel, A, C)
    sym = batched_gram(kernel, A)
    for b in range(5):
        torch.testing.assert_close(got[b], kernel(A[b], C[b]), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(sym[b], kernel(A[b]), rtol=1e-12, atol=1e-12)


def test_unknown_kernel_falls_back_to_per_batch_calls():
    class Cosine(Kernel):
        name = "cosine"

        def _gram(self, X1, X2, *, same):
            return (
                torch.nn.functional.normalize(X1, dim=1)
                @ torch.nn.functional.normalize(X2, dim=1).T
            )

    A = torch.randn(3, 4, 2, dtype=torch.float64)
    got = batched_gram(Cosine(), A)
    torch.testing.assert_close(got[1], Cosine()(A[1]))


def test_subclass_of_fast_kernel_is_not_taken_for_its_parent():
    class Scaled(GaussianKernel):
        def _gram(self, X1, X2, *, same):
            return 2.0 * super()._gram(X1, X2, same=same)

    A = torch.randn(2, 3, 2, dtype=torch.float64)
    torch.testing.assert_close(batched_gram(Scaled(1.0), A)[0], Scaled(1.0)(A[0]))


def test_squared_distances_near_duplicates_are_accurate():
    base = torch.randn(2, 1, 5, dtype=torch.float64) * 1e3
    A = base + 1e-6 * torch.randn(2, 4, 5, dtype=torch.float64)
    d2 = batched_squared_distances(A)
    direct = ((A[:, :, None, :] - A[:, None, :, :]) ** 2).sum(-1)
    torch.testing.assert_close(d2, direct, rtol=1e-9, atol=0.0)
    for b in range(2):
        torch.testing.assert_close(d2[b], squared_distances(A[b], A[b], same=True))
    assert bool((d2.diagonal(dim1=1, dim2=2) == 0).all())


def test_bandwidth_gradient_flows():
    bw = torch.tensor(1.1, dtype=torch.float64, requires_grad=True)
    A = torch.randn(2, 3, 2, dtype=torch.float64)
    batched_gram(make_kernel("laplace", bandwidth=bw), A).sum().backward()
    assert bw.grad is not None and float(bw.grad) != 0.0


@pytest.mark.parametrize("name", sorted(KERNEL_PARAMS))
def test_batched_gram_applies_the_kernel_classes_own_formula(name, monkeypatch):
    # one source of truth: change a class's formula and the batched Grams follow it
    cls = KERNELS[name]
    method = "from_inner_products" if name in ("linear", "polynomial") else "from_distances"
    original = getattr(cls, method)
    monkeypatch.setattr(cls, method, lambda self, S, *a, **kw: 3.0 * original(self, S, *a) + 1.0)
    kernel = make_kernel(name, **KERNEL_PARAMS[name])
    A = torch.randn(3, 5, 4, dtype=torch.float64)
    got = batched_gram(kernel, A)
    for b in range(3):
        torch.testing.assert_close(got[b], kernel(A[b]), rtol=1e-12, atol=1e-12)
    assert sparse.batched_gram is batched_gram  # sparse re-exports the one implementation
