"""RFMClassifier's probabilities: the exact leave-one-out calibration it shares with
KernelClassifier, on the final model (issue 10, item 14)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from kernelens.kernels import KernelClassifier, fit_temperature
from kernelens.kernels.calibration import inverse_diagonal
from kernelens.rfm import RFMClassifier


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    sc = StandardScaler().fit(Xtr)
    return sc.transform(Xtr), sc.transform(Xte), ytr, yte


def test_log_loss_on_standardised_breast_cancer_is_sane(cancer):
    Xtr, Xte, ytr, yte = cancer
    clf = RFMClassifier(random_state=0).fit(Xtr, ytr)
    ours = log_loss(yte, clf.predict_proba(Xte))
    lr = log_loss(yte, LogisticRegression(max_iter=1000).fit(Xtr, ytr).predict_proba(Xte))
    # a temperature fitted on ~40 held-out points collapsed to ~0.005: log-loss ~1.0
    assert clf.score(Xte, yte) > 0.93
    assert ours < 0.25 and ours < 3 * lr
    assert 0.05 < clf.temperature_ < 1.0


def _explicit_loo_scores(clf: RFMClassifier, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Refit the final kernel solve (metric and intercept fixed) without each point."""
    m = clf.machine_
    U = m.factor.apply(torch.as_tensor(X))
    K = torch.exp(-torch.cdist(U, U) / m.bandwidth).numpy()
    Yc = Y - m.intercept.numpy()
    out = np.empty_like(Y)
    for i in range(len(X)):
        keep = np.arange(len(X)) != i
        coef = np.linalg.solve(K[np.ix_(keep, keep)] + clf.alpha_ * np.eye(keep.sum()), Yc[keep])
        out[i] = K[i, keep] @ coef + m.intercept.numpy()
    return out


@pytest.mark.parametrize("standardize", [False, True])
def test_temperature_is_that_of_exact_leave_one_out_refits(standardize):
    g = np.random.default_rng(0)
    X = g.normal(size=(40, 3)) * np.array([1.0, 5.0, 0.2])
    codes = (X[:, 0] + 0.2 * X[:, 1] + 0.5 * g.normal(size=40) > 0).astype(int)
    clf = RFMClassifier(iters=2, alpha=1e-2, standardize=standardize).fit(X, codes)
    scores = _explicit_loo_scores(clf, X, np.eye(2)[codes])
    assert clf.temperature_ == pytest.approx(fit_temperature(scores, codes), rel=1e-6)


def test_one_calibration_path_for_both_classifiers():
    g = np.random.default_rng(2)
    X = g.normal(size=(60, 4))
    y = np.where(X[:, 0] + 0.3 * g.normal(size=60) > 0, "yes", "no")
    rfm = RFMClassifier(bandwidth=2.0, alpha=1e-2, iters=0, centering=False, standardize=False).fit(
        X, y
    )
    krr = KernelClassifier("laplace", bandwidth=2.0, alpha=1e-2).fit(X, y)
    assert rfm.temperature_ == pytest.approx(krr.temperature_, rel=1e-10)
    np.testing.assert_allclose(rfm.predict_proba(X), krr.predict_proba(X), rtol=1e-9)
    np.testing.assert_allclose(rfm.predict_log_proba(X), krr.predict_log_proba(X), rtol=1e-9)
    for name in ("predict_proba", "predict_log_proba", "decision_function", "predict"):
        assert getattr(type(rfm), name) is getattr(type(krr), name)


@pytest.mark.parametrize("solver", ["cg", "eigenpro"])
def test_iterative_routes_calibrate_on_a_seeded_subsample(solver):
    g = np.random.default_rng(3)
    X = g.normal(size=(300, 3))
    y = (X[:, 0] > 0).astype(int)
    exact = RFMClassifier(iters=1, alpha=1e-2, solver="cholesky", random_state=0).fit(X, y)
    kw = {"tol": 1e-10, "max_iter": 2000} if solver == "cg" else {"max_iter": 200}
    it = RFMClassifier(iters=1, alpha=1e-2, solver=solver, random_state=0, **kw)
    it.fit(X, y)
    again = RFMClassifier(iters=1, alpha=1e-2, solver=solver, random_state=0, **kw).fit(X, y)
    assert it.temperature_ == again.temperature_
    # 256 of the 300 points: close to, not equal to, the exact all-points temperature
    assert it.temperature_ == pytest.approx(exact.temperature_, rel=0.2)


def test_inverse_diagonal_of_a_subsample_is_exact():
    g = np.random.default_rng(4)
    B = g.normal(size=(50, 50))
    A = torch.as_tensor(B @ B.T + 50 * np.eye(50))
    ref = torch.linalg.inv(A).diagonal()
    rows, full = inverse_diagonal(50, A.dtype, factor=torch.linalg.cholesky(A))
    torch.testing.assert_close(full, ref[rows], rtol=1e-12, atol=0)
    rows, sub = inverse_diagonal(50, A.dtype, solve=lambda E: torch.linalg.solve(A, E), points=7)
    assert len(rows) == 7 and len(set(rows.tolist())) == 7
    torch.testing.assert_close(sub, ref[rows], rtol=1e-12, atol=0)
