"""RFM defaults: the last iteration unless early stopping is asked for (issue 10, item 15),
robust to the units of the features (item 16), and named like the other estimators."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from kernelens.rfm import EarlyStoppingWarning, RFMClassifier, RFMRegressor


@pytest.fixture
def blobs():
    g = np.random.default_rng(1)
    centres = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])
    labels = g.integers(0, 3, size=150)
    X = np.concatenate([centres[labels] + g.normal(size=(150, 2)), g.normal(size=(150, 4))], 1)
    return X, labels


def test_classifier_without_early_stopping_keeps_the_last_iteration(blobs):
    X, labels = blobs
    clf = RFMClassifier(iters=3, random_state=0).fit(X, labels)
    # the classifier is RFM regression on one-hot targets, all the data, last iteration
    reg = RFMRegressor(iters=3, random_state=0).fit(X, np.eye(3)[labels])
    assert clf.best_iter_ == 3 and "val_error" not in clf.history_[-1]
    torch.testing.assert_close(clf.M_, reg.M_, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(clf.machine_.coef, reg.machine_.coef, rtol=1e-10, atol=1e-12)


def test_agop_subsample_on_one_hot_windows_learns_a_metric():
    # issue 18: agop_samples < n on one-hot inputs returned best_iter_ = 0 with M = I
    g = np.random.default_rng(0)
    tokens = g.integers(0, 5, size=(200, 3))
    X = np.concatenate([np.eye(5)[tokens[:, j]] for j in range(3)], axis=1)
    y = (tokens[:, 0] + tokens[:, 1]) % 3
    clf = RFMClassifier(iters=2, agop_samples=50, standardize=False, random_state=0).fit(X, y)
    assert clf.best_iter_ == 2
    assert not torch.allclose(clf.M_, torch.eye(15, dtype=clf.M_.dtype))


def test_early_stopping_that_keeps_iteration_zero_says_so():
    g = np.random.default_rng(0)
    X = g.normal(size=(120, 5))
    y = g.integers(0, 2, size=120)  # pure noise: no metric update helps on held-out data
    seen = 0
    for seed in range(6):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            clf = RFMClassifier(iters=2, early_stopping=True, random_state=seed).fit(X, y)
        warned = any(issubclass(w.category, EarlyStoppingWarning) for w in caught)
        assert warned == (clf.best_iter_ == 0)
        seen += warned
    assert seen > 0


def test_raw_and_standardised_inputs_give_the_same_model():
    X, y = load_breast_cancer(return_X_y=True)
    X, y = X[:200], y[:200]
    Xs = StandardScaler().fit_transform(X)
    raw = RFMClassifier(iters=2, random_state=0).fit(X, y)
    std = RFMClassifier(iters=2, random_state=0).fit(Xs, y)
    np.testing.assert_allclose(raw.decision_function(X), std.decision_function(Xs), atol=1e-8)
    # M_ is on the inputs as given: diag(1/s) M diag(1/s)
    s = raw.scale_
    torch.testing.assert_close(raw.M_ * (s[:, None] * s[None, :]), std.M_, rtol=1e-6, atol=1e-9)


def test_defaults_on_unscaled_breast_cancer_do_not_collapse_to_the_prior():
    X, y = load_breast_cancer(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    clf = RFMClassifier(random_state=0).fit(Xtr, ytr)  # raw features, areas ~1000
    assert clf.score(Xte, yte) > 0.93  # was 0.774: the prior's share is 0.63


def test_standardize_false_is_the_previous_behaviour(blobs):
    X, labels = blobs
    a = RFMRegressor(iters=1, standardize=False).fit(X * 100.0, labels)
    assert torch.equal(a.scale_, torch.ones(6, dtype=torch.float64))
    b = RFMRegressor(iters=1, standardize=False, bandwidth=1000.0).fit(X * 100.0, labels)
    assert not np.allclose(a.predict(X * 100.0), b.predict(X * 100.0))


# -- names (issue 17, item 1) -------------------------------------------------------------------
def test_reg_is_a_deprecated_alias_of_alpha(blobs):
    X, labels = blobs
    new = RFMRegressor(iters=1, alpha=0.05).fit(X, labels)
    with pytest.warns(FutureWarning, match="alpha"):
        old = RFMRegressor(iters=1, reg=0.05).fit(X, labels)
    assert old.alpha_ == new.alpha_ == 0.05
    np.testing.assert_array_equal(old.predict(X), new.predict(X))
    with pytest.raises(ValueError, match="only alpha"):
        RFMRegressor(alpha=0.1, reg=0.05).fit(X, labels)
