"""RFMRegressor / RFMClassifier: scikit-learn conformance, reductions to kernel ridge, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

from kernelens.data import rfm_scaling
from kernelens.kernels import KernelRidge
from kernelens.rfm import AGOPVanishedWarning, RFMClassifier, RFMRegressor, agop, fit_temperature


@parametrize_with_checks([RFMRegressor(iters=2), RFMClassifier(iters=2)])
def test_sklearn_conformance(estimator, check):
    check(estimator)


@pytest.fixture
def data():
    g = np.random.default_rng(0)
    X = g.normal(size=(120, 5))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2
    return X, y, g.normal(size=(30, 5))


@pytest.mark.parametrize("kernel", ["laplace", "gaussian", "product_laplace"])
def test_zero_iterations_is_kernel_ridge(data, kernel):
    X, y, Xt = data
    rfm = RFMRegressor(
        kernel, bandwidth=3.0, alpha=1e-2, iters=0, centering=False, standardize=False
    ).fit(X, y)
    krr = KernelRidge(kernel, bandwidth=3.0, alpha=1e-2).fit(X, y)
    np.testing.assert_allclose(rfm.predict(Xt), krr.predict(Xt), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rfm.coef_, krr.dual_coef_, rtol=1e-10, atol=1e-12)
    assert np.allclose(rfm.M_, np.eye(5)) and rfm.history_[0]["rank_M"] == 5


def test_centering_fits_the_residual_of_the_mean(data):
    X, y, Xt = data
    rfm = RFMRegressor(iters=0, alpha=1e-2, standardize=False).fit(X, y + 100.0)
    krr = KernelRidge("laplace", bandwidth=10.0, alpha=1e-2).fit(X, y + 100.0 - (y + 100).mean())
    np.testing.assert_allclose(rfm.predict(Xt), krr.predict(Xt) + (y + 100).mean(), rtol=1e-10)
    assert rfm.intercept_ == pytest.approx((y + 100).mean())


def _mse(model, split) -> float:
    return float(((model.predict(split.X_test) - split.y_test) ** 2).mean())


def test_defaults_learn_the_scaling_task_and_find_its_coordinates():
    s = rfm_scaling(400, 12, n_test=400, seed=0, dtype=torch.float64)
    base = RFMRegressor(iters=0).fit(s.X_train, s.y_train)
    rfm = RFMRegressor().fit(s.X_train, s.y_train)
    assert _mse(rfm, s) < 0.4 * _mse(base, s)
    top = set(torch.argsort(rfm.M_.diagonal(), descending=True)[:3].tolist())
    assert top == {0, 1, 2}
    assert isinstance(rfm.predict(s.X_test), torch.Tensor)  # torch in, torch out
    assert len(rfm.history_) == 6 and rfm.n_iter_ == 5 and rfm.best_iter_ == 5


def test_diagonal_metric(data):
    X, y, _ = data
    rfm = RFMRegressor(M="diagonal", iters=2).fit(X, y)
    M = rfm.M_.numpy()
    assert np.count_nonzero(M - np.diag(np.diag(M))) == 0
    assert np.argmax(np.diag(M)) in (0, 1)


def test_early_stopping_keeps_the_best_validation_iteration(data):
    X, y, Xt = data
    rfm = RFMRegressor(iters=4, early_stopping=True, random_state=0).fit(X, y)
    val = [h["val_error"] for h in rfm.history_]
    assert rfm.best_iter_ == int(np.argmin(val))
    assert rfm.coef_.shape == (120,)  # refitted on all the data
    again = RFMRegressor(iters=4, early_stopping=True, random_state=0).fit(X, y)
    np.testing.assert_array_equal(rfm.predict(Xt), again.predict(Xt))


def test_full_metric_rfm_is_rotation_equivariant(data):
    X, y, Xt = data
    Q, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(5, 5)))
    a = RFMRegressor(iters=3, standardize=False).fit(X, y)
    b = RFMRegressor(iters=3, standardize=False).fit(X @ Q, y)
    np.testing.assert_allclose(b.predict(Xt @ Q), a.predict(Xt), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(b.M_.numpy(), Q.T @ a.M_.numpy() @ Q, rtol=1e-7, atol=1e-9)


def test_multi_output_regression(data):
    X, y, Xt = data
    Y = np.stack([y, X[:, 2]], axis=1)
    rfm = RFMRegressor(iters=2).fit(X, Y)
    assert rfm.predict(Xt).shape == (30, 2) and rfm.coef_.shape == (120, 2)
    assert rfm.intercept_.shape == (2,)


def test_agop_subsample_is_reproducible(data):
    X, y, _ = data
    a = RFMRegressor(iters=2, agop_samples=50, random_state=3).fit(X, y)
    b = RFMRegressor(iters=2, agop_samples=50, random_state=3).fit(X, y)
    np.testing.assert_array_equal(a.M_, b.M_)
    full = RFMRegressor(iters=2).fit(X, y)
    assert not torch.allclose(a.M_, full.M_)


def test_float32(data):
    X, y, Xt = data
    a = RFMRegressor(iters=2, dtype="float32", alpha=1e-2).fit(X, y)
    b = RFMRegressor(iters=2, alpha=1e-2).fit(X, y)
    assert a.M_.dtype == torch.float32
    np.testing.assert_allclose(a.predict(Xt), b.predict(Xt), rtol=1e-2, atol=1e-2)


def test_constant_inputs_warn_and_keep_the_metric():
    X = np.ones((10, 3))
    with pytest.warns(AGOPVanishedWarning):
        rfm = RFMRegressor().fit(X, np.arange(10.0))
    assert rfm.n_iter_ == 0
    np.testing.assert_allclose(rfm.predict(X[:2]), np.full(2, 4.5), rtol=1e-2)


def test_constant_feature_gets_zero_weight(data):
    X, y, _ = data
    X = np.concatenate([X, np.full((len(X), 1), 3.0)], axis=1)
    rfm = RFMRegressor(iters=2).fit(X, y)
    assert float(rfm.M_[5].abs().max()) == 0.0


# -- classifier --------------------------------------------------------------------------------
@pytest.fixture
def blobs():
    g = np.random.default_rng(1)
    centres = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])
    labels = g.integers(0, 3, size=240)
    X = centres[labels] + 1.1 * g.normal(size=(240, 2))
    X = np.concatenate([X, g.normal(size=(240, 6))], axis=1)  # six irrelevant features
    names = np.array(["ant", "bee", "cat"])[labels]
    return X[:180], names[:180], X[180:], names[180:]


def test_classifier_string_labels_probabilities_and_calibration(blobs):
    X, y, Xt, yt = blobs
    clf = RFMClassifier(random_state=0).fit(X, y)
    assert list(clf.classes_) == ["ant", "bee", "cat"]
    P = clf.predict_proba(Xt)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.classes_[P.argmax(axis=1)], clf.predict(Xt))
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(Xt)), P, rtol=1e-10)
    assert (clf.predict(Xt) == yt).mean() > 0.75
    assert clf.best_iter_ == 5  # the last iteration: no selection without early stopping
    assert 0 < clf.temperature_ < 1.0  # one-hot regression scores are under-confident
    # the metric weighs the two informative features most
    diag = clf.M_.diagonal()
    assert float(diag[:2].min()) > float(diag[2:].max())
    scores = torch.tensor(clf.decision_function(Xt))
    codes = np.searchsorted(clf.classes_, yt)

    def nll(T: float) -> float:
        logp = torch.log_softmax(scores / T, dim=1).numpy()
        return float(-logp[np.arange(len(yt)), codes].mean())

    assert nll(clf.temperature_) < nll(1.0)


def test_binary_decision_function(blobs):
    X, y, Xt, _ = blobs
    mask = y != "cat"
    clf = RFMClassifier(iters=2, random_state=0).fit(X[mask], y[mask])
    d = clf.decision_function(Xt)
    assert d.shape == (len(Xt),)
    np.testing.assert_array_equal(np.where(d > 0, "bee", "ant"), clf.predict(Xt))


def test_fit_temperature_minimises_the_nll():
    g = np.random.default_rng(0)
    scores = g.normal(size=(200, 4))
    codes = np.argmax(scores + g.normal(size=(200, 4)), axis=1)
    T = fit_temperature(scores, codes)

    def nll(t):
        z = scores / t
        z = z - z.max(axis=1, keepdims=True)
        return -(z[np.arange(200), codes] - np.log(np.exp(z).sum(axis=1))).mean()

    grid = np.exp(np.linspace(-3, 3, 2001))
    assert nll(T) <= min(nll(t) for t in grid) + 1e-6


@pytest.mark.parametrize("solver", ["cg", "eigenpro"])
def test_iterative_solvers_agree_with_cholesky(data, solver):
    X, y, Xt = data
    ref = RFMRegressor(iters=2, alpha=1e-2, solver="cholesky").fit(X, y)
    it = RFMRegressor(iters=2, alpha=1e-2, solver=solver, tol=1e-10, max_iter=500, random_state=0)
    it.fit(X, y)
    assert it.solver_ == solver and it.history_[0]["solver_iterations"] > 0
    rtol = 1e-6 if solver == "cg" else 1e-3
    np.testing.assert_allclose(it.predict(Xt), ref.predict(Xt), rtol=rtol, atol=rtol)


def test_auto_solver_switches_to_cg_beyond_the_memory_budget(data):
    X, y, _ = data
    small = RFMRegressor(iters=1).fit(X, y)
    assert small.solver_ == "cholesky"
    n = 600
    g = np.random.default_rng(0)
    Xb, yb = g.normal(size=(n, 3)), g.normal(size=n)
    big = RFMRegressor(iters=0, alpha=0.1, memory_budget=3 * n * n * 8 - 1).fit(Xb, yb)
    assert big.solver_ == "cg" and big.history_[0]["converged"]
    with pytest.raises(MemoryError, match="solver='cg'"):
        RFMRegressor(solver="cholesky", memory_budget=3 * n * n * 8 - 1).fit(Xb, yb)


def test_agop_power_takes_the_matrix_root(data):
    X, y, _ = data
    plain = RFMRegressor(iters=0, standardize=False).fit(X, y)
    root = RFMRegressor(iters=1, agop_power=0.5, standardize=False).fit(X, y)
    w, V = torch.linalg.eigh(agop(plain, X))
    ref = (V * w.clamp_min(0).sqrt()) @ V.T
    torch.testing.assert_close(
        root.M_, ref / torch.linalg.eigvalsh(ref).max(), rtol=1e-8, atol=1e-10
    )
