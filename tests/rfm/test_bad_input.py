"""Bad input raises scikit-learn style errors that name the problem."""

from __future__ import annotations

import numpy as np
import pytest

from kernelens.rfm import RFMClassifier, RFMRegressor


@pytest.fixture
def Xy():
    g = np.random.default_rng(0)
    return g.normal(size=(20, 3)), g.normal(size=20)


def test_nan_in_y(Xy):
    X, y = Xy
    y[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        RFMRegressor().fit(X, y)


def test_length_mismatch(Xy):
    X, y = Xy
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        RFMRegressor().fit(X, y[:-1])


def test_single_sample(Xy):
    X, y = Xy
    with pytest.raises(ValueError, match="1 sample"):
        RFMRegressor().fit(X[:1], y[:1])
    with pytest.raises(ValueError, match="1 sample"):
        RFMClassifier().fit(X[:1], ["a"])


@pytest.mark.parametrize("bandwidth", [0.0, -1.0, float("nan")])
def test_non_positive_bandwidth(Xy, bandwidth):
    X, y = Xy
    with pytest.raises(ValueError, match="bandwidth"):
        RFMRegressor(bandwidth=bandwidth).fit(X, y)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"alpha": -1.0}, "alpha"),
        ({"iters": -1}, "iters"),
        ({"iters": 2.5}, "iters"),
        ({"M": "low_rank"}, "M"),
        ({"kernel": "linear"}, "kernel"),
        ({"solver": "qr"}, "solver"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"centering": "yes"}, "centering"),
        ({"dtype": "float16"}, "dtype"),
        ({"agop_samples": 0}, "agop_samples"),
        ({"agop_power": 0.0}, "agop_power"),
        ({"tol": -1.0}, "tol"),
        ({"max_iter": 0}, "max_iter"),
    ],
)
def test_bad_hyper_parameters(Xy, params, match):
    X, y = Xy
    with pytest.raises((ValueError, TypeError), match=match):
        RFMRegressor(**params).fit(X, y)


def test_classifier_rejects_continuous_targets(Xy):
    X, y = Xy
    with pytest.raises(ValueError, match="Unknown label type"):
        RFMClassifier().fit(X, y)


def test_predict_checks_features(Xy):
    X, y = Xy
    rfm = RFMRegressor(iters=1).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        rfm.predict(X[:, :2])
    with pytest.raises(ValueError, match="2D array"):
        rfm.predict(X[0])
