"""The scikit-learn estimators with client=: same fits as in-process, clone, GridSearchCV,
pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

pytest.importorskip("distributed")

from kernelens.kernels import GaussianProcessRegressor, KernelClassifier, KernelRidge
from kernelens.rfm import RFMClassifier, RFMRegressor


def _data(n: int = 300, seed: int = 0):
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, 5))
    y = np.sin(X[:, 0]) + X[:, 1] ** 2 + 0.1 * g.normal(size=n)
    return X, y


def _rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def test_kernel_ridge_cg_with_client_matches_in_process(client):
    X, y = _data()
    kw = {"kernel": "laplace", "bandwidth": 3.0, "alpha": 1e-2, "solver": "cg", "tol": 1e-10}
    local = KernelRidge(**kw).fit(X, y)
    dist = KernelRidge(**kw, client=client).fit(X, y)
    assert dist.solver_ == "cg"
    assert _rel(dist.dual_coef_, local.dual_coef_) < 1e-12
    assert _rel(dist.predict(X[:50]), local.predict(X[:50])) < 1e-12


def test_auto_is_cg_and_cholesky_is_refused_with_a_client(client):
    X, y = _data(120)
    assert KernelRidge(alpha=1e-1, client=client).fit(X, y).solver_ == "cg"
    with pytest.raises(ValueError, match="iterative"):
        KernelRidge(alpha=1e-1, solver="cholesky", client=client).fit(X, y)
    with pytest.raises(ValueError, match="cholesky"):
        RFMRegressor(solver="cholesky", client=client).fit(X, y)


def test_kernel_classifier_with_client(client):
    X, y = _data(200)
    labels = (y > np.median(y)).astype(int)
    kw = {"bandwidth": 3.0, "alpha": 1e-2, "solver": "cg", "tol": 1e-10}
    local = KernelClassifier(**kw).fit(X, labels)
    dist = KernelClassifier(**kw, client=client).fit(X, labels)
    assert _rel(dist.predict_proba(X[:40]), local.predict_proba(X[:40])) < 1e-9


def test_gp_with_client_matches_in_process(client):
    X, y = _data(150)
    local = GaussianProcessRegressor(bandwidth=2.0, alpha=1e-2).fit(X, y)
    dist = GaussianProcessRegressor(bandwidth=2.0, alpha=1e-2, client=client).fit(X, y)
    m1, s1 = local.predict(X[:30], return_std=True)
    m2, s2 = dist.predict(X[:30], return_std=True)
    assert _rel(m2, m1) < 1e-12 and _rel(s2, s1) < 1e-9
    assert abs(dist.log_marginal_likelihood_value_ - local.log_marginal_likelihood_value_) < 1e-8


@pytest.mark.parametrize("M", ["full", "diagonal"])
def test_rfm_with_client_matches_in_process(client, M):
    X, y = _data(250)
    kw = {"bandwidth": 5.0, "iters": 2, "M": M, "solver": "cg", "tol": 1e-11, "random_state": 0}
    local = RFMRegressor(**kw).fit(X, y)
    dist = RFMRegressor(**kw, client=client).fit(X, y)
    assert _rel(dist.M_, local.M_) < 1e-9
    assert _rel(dist.predict(X[:40]), local.predict(X[:40])) < 1e-9


def test_rfm_agop_tiles_run_on_the_workers(client):
    import distributed

    X, y = _data(200)
    with distributed.get_task_stream(client) as stream:
        RFMRegressor(bandwidth=5.0, iters=1, solver="cg", client=client).fit(X, y)
    names = {t["key"] for t in stream.data}
    assert any("_run_tile" in k for k in names)


def test_clone_passes_the_client_by_reference(client):
    est = RFMClassifier(bandwidth=4.0, client=client)
    copy = clone(est)
    assert copy.client is client and copy is not est
    assert copy.get_params()["bandwidth"] == 4.0
    assert clone(KernelRidge()).client is None


def test_grid_search_with_client(client):
    X, y = _data(150)
    grid = GridSearchCV(
        KernelRidge(bandwidth=3.0, solver="cg", client=client),
        {"alpha": [1e-2, 1e-1]},
        cv=2,
        n_jobs=1,
    ).fit(X, y)
    assert grid.best_estimator_.client is client
    assert np.isfinite(grid.best_score_)


def test_grid_search_with_processes_is_refused(client):
    X, y = _data(60)
    search = GridSearchCV(
        KernelRidge(bandwidth=3.0, solver="cg", client=client),
        {"alpha": [1e-2, 1e-1]},
        cv=2,
        n_jobs=2,
        error_score="raise",
    )
    with pytest.raises(RuntimeError, match="n_jobs=1"):
        search.fit(X, y)


def test_pickling_drops_the_client_and_fit_then_refuses(client):
    X, y = _data(80)
    est = KernelRidge(bandwidth=3.0, alpha=1e-1, solver="cg", client=client).fit(X, y)
    back = pickle.loads(pickle.dumps(est))
    assert back.client is None
    np.testing.assert_allclose(back.predict(X[:5]), est.predict(X[:5]), rtol=1e-12)
    with pytest.raises(RuntimeError, match="pickled with a Dask client"):
        back.fit(X, y)
    back.set_params(client=None)
    back.fit(X, y)


def test_a_closed_client_is_refused_at_fit():
    from kernelens.distributed import local_client

    with local_client(n_workers=1) as c:
        pass
    X, y = _data(40)
    with pytest.raises(RuntimeError, match="not running"):
        KernelRidge(client=c).fit(X, y)
