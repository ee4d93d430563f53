"""Classic kernels against scipy/numpy float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from sklearn.metrics.pairwise import laplacian_kernel, polynomial_kernel, rbf_kernel

from kernelens.kernels import KERNELS, Kernel, make_kernel

L = 1.7


def _data(n1=37, n2=23, d=5, shift=3.0, seed=0):
    g = np.random.default_rng(seed)
    return g.normal(size=(n1, d)) + shift, g.normal(size=(n2, d)) + shift


def _psd(d, seed=1):
    g = np.random.default_rng(seed)
    A = g.normal(size=(d, d))
    return A @ A.T / d


REFERENCES = {
    "laplace": (lambda: make_kernel("laplace", bandwidth=L), lambda a, b: np.exp(-cdist(a, b) / L)),
    "gaussian": (
        lambda: make_kernel("gaussian", bandwidth=L),
        lambda a, b: rbf_kernel(a, b, gamma=1 / (2 * L**2)),
    ),
    "product_laplace": (
        lambda: make_kernel("product_laplace", bandwidth=L),
        lambda a, b: laplacian_kernel(a, b, gamma=1 / L),
    ),
    "mahalanobis_laplace": (
        lambda: make_kernel("mahalanobis_laplace", M=torch.from_numpy(_psd(5)), bandwidth=L),
        lambda a, b: np.exp(-cdist(a, b, "mahalanobis", VI=_psd(5)) / L),
    ),
    "mahalanobis_gaussian": (
        lambda: make_kernel("mahalanobis_gaussian", M=torch.from_numpy(_psd(5)), bandwidth=L),
        lambda a, b: np.exp(-(cdist(a, b, "mahalanobis", VI=_psd(5)) ** 2) / (2 * L**2)),
    ),
    "linear": (lambda: make_kernel("linear"), lambda a, b: a @ b.T),
    "polynomial": (
        lambda: make_kernel("polynomial", degree=3, coef0=1.0),
        lambda a, b: polynomial_kernel(a, b, degree=3, coef0=1.0),
    ),
}


def test_every_registered_kernel_has_a_reference():
    assert set(REFERENCES) == set(KERNELS)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_gram_matches_reference_float64(name):
    make, ref = REFERENCES[name]
    a, b = _data()
    k = make()
    assert isinstance(k, Kernel)
    K = k(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    R = ref(a, b)
    np.testing.assert_allclose(K, R, rtol=1e-10, atol=1e-12 * np.abs(R).max())
    Ks = k(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(Ks, ref(a, a), rtol=1e-10, atol=1e-12 * np.abs(Ks).max())
    np.testing.assert_allclose(k.diag(torch.from_numpy(a)).numpy(), np.diag(ref(a, a)), rtol=1e-12)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_tiled_matvec_matches_dense(name):
    make, _ = REFERENCES[name]
    a, b = _data(n1=301, n2=257)
    k = make()
    A, B = torch.from_numpy(a), torch.from_numpy(b)
    V = torch.randn(257, 3, dtype=torch.float64)
    dense = k(A, B) @ V
    tiled = k.matvec(A, B, V, memory_budget=1)  # smallest budget: many tiles
    torch.testing.assert_close(tiled, dense, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(k.matvec(A, B, V[:, 0]), dense[:, 0], rtol=1e-11, atol=1e-11)
    op = k.operator(A)
    torch.testing.assert_close(op.to_dense(), k(A), rtol=1e-11, atol=1e-11)


def test_near_duplicates_are_accurate():
    a = np.random.default_rng(0).normal(size=(20, 8)) + 100.0
    b = a + 1e-7  # near duplicates far from the origin: the expansion alone would fail
    k = make_kernel("laplace", bandwidth=1e-6)
    K = k(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(K, np.exp(-cdist(a, b) / 1e-6), rtol=1e-8, atol=1e-300)


@pytest.mark.parametrize("name", ["laplace", "gaussian", "mahalanobis_laplace", "product_laplace"])
def test_gradcheck_inputs_and_bandwidth(name):
    a, b = _data(n1=4, n2=3)
    A = torch.from_numpy(a).requires_grad_()
    B = torch.from_numpy(b).requires_grad_()
    bw = torch.tensor(L, dtype=torch.float64, requires_grad=True)
    kw = {"M": torch.from_numpy(_psd(5))} if name.startswith("mahalanobis") else {}

    def f(x1, x2, bw):
        return make_kernel(name, bandwidth=bw, **kw)(x1, x2)

    assert torch.autograd.gradcheck(f, (A, B, bw))


def test_laplace_gradient_is_finite_at_coincident_points():
    X = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    make_kernel("laplace", bandwidth=1.0)(X).sum().backward()
    assert torch.isfinite(X.grad).all()


def test_bad_inputs_name_the_argument():
    k = make_kernel("laplace", bandwidth=1.0)
    with pytest.raises(ValueError, match="unknown kernel 'lapalce'.*'laplace'"):
        make_kernel("lapalce")
    with pytest.raises(ValueError, match="bandwidth must be a finite positive"):
        make_kernel("gaussian", bandwidth=0.0)
    with pytest.raises(ValueError, match="bandwidth must be a finite positive"):
        make_kernel("laplace", bandwidth=float("nan"))
    with pytest.raises(ValueError, match="X2 has 4"):
        k(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="X1 contains 1 non-finite"):
        k(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="X1 is empty"):
        k(torch.zeros(0, 2))
    with pytest.raises(ValueError, match="X1 must be 2-D"):
        k(torch.zeros(3))
    with pytest.raises(
        TypeError, match="X2 has dtype torch.float32 but X1 has dtype torch.float64"
    ):
        k(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="positive semi-definite"):
        make_kernel("mahalanobis_laplace", M=-torch.eye(3))
    with pytest.raises(ValueError, match="V has 2 rows"):
        k.matvec(torch.zeros(3, 2), None, torch.zeros(2))
