"""KernelRidge, KernelClassifier and GaussianProcessRegressor against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from sklearn.gaussian_process import GaussianProcessRegressor as SkGP
from sklearn.gaussian_process.kernels import RBF, Matern
from sklearn.gaussian_process.kernels import ConstantKernel as C
from sklearn.kernel_ridge import KernelRidge as SkKRR
from sklearn.utils.estimator_checks import check_estimator

from kernelens.kernels import (
    GaussianProcessRegressor,
    KernelClassifier,
    KernelRidge,
    LaplaceKernel,
)


@pytest.fixture
def data():
    g = np.random.default_rng(0)
    X = g.normal(size=(90, 4))
    y = np.sin(X[:, 0]) + 0.1 * g.normal(size=90)
    return X, y, g.normal(size=(25, 4))


@pytest.mark.parametrize(
    "est",
    [
        KernelRidge(alpha=0.1),
        KernelClassifier(alpha=0.1),
        GaussianProcessRegressor(alpha=1e-2),
    ],
    ids=lambda e: type(e).__name__,
)
def test_check_estimator(est):
    check_estimator(est)


def test_krr_matches_sklearn_gaussian_and_multioutput(data):
    X, y, Xt = data
    Y = np.stack([y, np.cos(X[:, 1])], axis=1)
    ours = KernelRidge("gaussian", bandwidth=1.3, alpha=0.1).fit(X, Y)
    ref = SkKRR(kernel="rbf", gamma=1 / (2 * 1.3**2), alpha=0.1).fit(X, Y)
    np.testing.assert_allclose(ours.predict(Xt), ref.predict(Xt), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.dual_coef_, ref.dual_coef_, rtol=1e-8, atol=1e-10)


def test_krr_product_laplace_matches_sklearn_laplacian(data):
    X, y, Xt = data
    ours = KernelRidge("product_laplace", bandwidth=2.0, alpha=0.5).fit(X, y)
    ref = SkKRR(kernel="laplacian", gamma=0.5, alpha=0.5).fit(X, y)
    np.testing.assert_allclose(ours.predict(Xt), ref.predict(Xt), rtol=1e-8, atol=1e-10)


def test_krr_laplace_matches_precomputed_sklearn(data):
    X, y, Xt = data
    ours = KernelRidge("laplace", bandwidth=1.5, alpha=0.2).fit(X, y)
    ref = SkKRR(kernel="precomputed", alpha=0.2).fit(np.exp(-cdist(X, X) / 1.5), y)
    np.testing.assert_allclose(
        ours.predict(Xt), ref.predict(np.exp(-cdist(Xt, X) / 1.5)), rtol=1e-8, atol=1e-10
    )
    pre = KernelRidge("precomputed", alpha=0.2).fit(np.exp(-cdist(X, X) / 1.5), y)
    np.testing.assert_allclose(
        pre.predict(np.exp(-cdist(Xt, X) / 1.5)), ours.predict(Xt), rtol=1e-10, atol=1e-12
    )


def test_krr_accepts_torch_and_returns_torch(data):
    X, y, Xt = data
    m = KernelRidge(LaplaceKernel(bandwidth=2.0), alpha=0.1).fit(torch.from_numpy(X), y)
    out = m.predict(torch.from_numpy(Xt))
    assert isinstance(out, torch.Tensor) and out.shape == (25,)
    np.testing.assert_allclose(out.numpy(), m.predict(Xt), rtol=1e-12)


def test_iterative_solvers_match_cholesky(data):
    X, y, Xt = data
    exact = KernelRidge("gaussian", bandwidth=1.5, alpha=0.1).fit(X, y)
    assert exact.solver_ == "cholesky"
    cg = KernelRidge("gaussian", bandwidth=1.5, alpha=0.1, solver="cg", tol=1e-12).fit(X, y)
    np.testing.assert_allclose(cg.predict(Xt), exact.predict(Xt), rtol=1e-8, atol=1e-9)
    # "auto" falls back to matrix-free CG when the dense Gram does not fit the budget
    # (three 400 x 400 float64 matrices exceed the smallest budget, 1 MiB)
    X4 = np.random.default_rng(2).normal(size=(400, 4))
    y4 = np.sin(X4[:, 0])
    auto = KernelRidge("gaussian", bandwidth=1.5, alpha=0.1, memory_budget=1, tol=1e-12)
    assert auto.fit(X4, y4).solver_ == "cg"
    exact4 = KernelRidge("gaussian", bandwidth=1.5, alpha=0.1).fit(X4, y4)
    np.testing.assert_allclose(auto.predict(Xt), exact4.predict(Xt), rtol=1e-8, atol=1e-9)
    K = np.exp(-(cdist(X, X) ** 2) / (2 * 1.5**2))
    pre = KernelRidge("precomputed", alpha=0.1, solver="cg", tol=1e-12).fit(K, y)
    np.testing.assert_allclose(pre.dual_coef_, exact.dual_coef_, rtol=1e-8, atol=1e-9)
    with pytest.raises(ValueError, match="solver='eigenpro' needs kernel evaluations"):
        KernelRidge("precomputed", solver="eigenpro").fit(K, y)


def test_classifier_iterative_temperature_uses_exact_loo_subsample():
    g = np.random.default_rng(1)
    X = g.normal(size=(400, 3))
    labels = (X[:, 0] + 0.5 * g.normal(size=400) > 0).astype(int)
    exact = KernelClassifier("gaussian", bandwidth=1.5, alpha=0.1).fit(X, labels)
    cg = KernelClassifier("gaussian", bandwidth=1.5, alpha=0.1, solver="cg", tol=1e-12)
    cg.fit(X, labels)
    np.testing.assert_allclose(cg.decision_function(X), exact.decision_function(X), rtol=1e-7)
    # 256 exact LOO points instead of all 400: the same temperature up to sampling noise
    assert abs(np.log(cg.temperature_ / exact.temperature_)) < 0.25


@pytest.mark.parametrize(
    ("ours", "ref"),
    [
        (
            dict(kernel="gaussian", bandwidth=1.3, amplitude=2.0, alpha=0.05),
            C(2.0, "fixed") * RBF(1.3, "fixed"),
        ),
        (
            dict(kernel="laplace", bandwidth=0.9, amplitude=0.7, alpha=0.01),
            C(0.7, "fixed") * Matern(0.9, "fixed", nu=0.5),
        ),
    ],
    ids=["gaussian", "laplace=matern12"],
)
@pytest.mark.parametrize("normalize_y", [False, True])
def test_gp_matches_sklearn(data, ours, ref, normalize_y):
    X, y, Xt = data
    gp = GaussianProcessRegressor(**ours, normalize_y=normalize_y).fit(X, y)
    sk = SkGP(ref, alpha=ours["alpha"], optimizer=None, normalize_y=normalize_y).fit(X, y)
    m, s = gp.predict(Xt, return_std=True)
    m2, s2 = sk.predict(Xt, return_std=True)
    np.testing.assert_allclose(m, m2, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(s, s2, rtol=1e-8, atol=1e-10)
    _, cov = gp.predict(Xt, return_cov=True)
    _, cov2 = sk.predict(Xt, return_cov=True)
    np.testing.assert_allclose(cov, cov2, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(
        gp.log_marginal_likelihood_value_, sk.log_marginal_likelihood_value_, rtol=1e-10
    )


def test_gp_optimisation_raises_lml_and_matches_sklearn_optimum(data):
    X, y, _ = data
    start = GaussianProcessRegressor("gaussian", alpha=0.1).fit(X, y)
    opt = GaussianProcessRegressor("gaussian", alpha=0.1, optimize=True).fit(X, y)
    assert opt.log_marginal_likelihood_value_ > start.log_marginal_likelihood_value_
    # at the optimum, the LML is stationary: small moves do not increase it
    for kw in ({"bandwidth": opt.bandwidth_ * 1.01}, {"amplitude": opt.amplitude_ * 0.99}):
        assert opt.log_marginal_likelihood(**kw) <= opt.log_marginal_likelihood_value_ + 1e-8
    from sklearn.gaussian_process.kernels import WhiteKernel

    sk = SkGP(C(1.0, (1e-5, 1e5)) * RBF(1.0, (1e-5, 1e5)) + WhiteKernel(0.1, (1e-10, 1e5)))
    sk.fit(X, y)
    np.testing.assert_allclose(
        opt.log_marginal_likelihood_value_, sk.log_marginal_likelihood_value_, rtol=1e-4
    )


def test_classifier_strings_and_calibrated_proba(data):
    X, _, Xt = data
    labels = np.where(X[:, 0] + 0.3 * X[:, 1] > 0, "pos", "neg")
    clf = KernelClassifier("gaussian", bandwidth=2.0, alpha=0.1).fit(X, labels)
    assert set(clf.classes_) == {"neg", "pos"}
    assert clf.score(X, labels) > 0.9
    p = clf.predict_proba(Xt)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert clf.temperature_ > 0
    # leave-one-out scores from the closed form equal refits without each point
    i = 7
    scores_loo = KernelRidge("gaussian", bandwidth=2.0, alpha=0.1).fit(
        np.delete(X, i, 0), np.eye(2)[(labels == "pos").astype(int)][np.r_[0:i, i + 1 : 90]]
    )
    n = X.shape[0]
    K = np.exp(-(cdist(X, X) ** 2) / 8) + 0.1 * np.eye(n)
    Y = np.eye(2)[(labels == "pos").astype(int)]
    coef = np.linalg.solve(K, Y)
    loo = Y - coef / np.diag(np.linalg.inv(K))[:, None]
    np.testing.assert_allclose(loo[i], scores_loo.predict(X[i : i + 1])[0], rtol=1e-8)


def test_bad_inputs(data):
    X, y, _ = data
    with pytest.raises(ValueError, match="alpha must be a finite non-negative"):
        KernelRidge(alpha=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="bandwidth must be a finite positive"):
        KernelRidge(bandwidth=0.0).fit(X, y)
    with pytest.raises(ValueError, match="unknown kernel 'rbf'.*'gaussian'"):
        KernelRidge(kernel="rbf").fit(X, y)
    with pytest.raises(ValueError, match="unknown solver"):
        KernelRidge(solver="lu").fit(X, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        KernelRidge().fit(X, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        KernelRidge().fit(X, np.where(np.arange(90) == 3, np.nan, y))
    with pytest.raises(ValueError, match="square training Gram"):
        KernelRidge("precomputed").fit(X, y)
    with pytest.raises(ValueError, match="precomputed"):
        GaussianProcessRegressor("precomputed").fit(X @ X.T + np.eye(90), y).predict(
            X @ X.T, return_std=True
        )
