"""Saving and loading fitted estimators (safetensors + JSON header, no pickle)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from sklearn.exceptions import NotFittedError

from kernelens._persist import EstimatorFileError
from kernelens.kernels import (
    GaussianProcessRegressor,
    KernelClassifier,
    KernelRidge,
    LaplaceKernel,
)
from kernelens.rfm import RFMClassifier, RFMRegressor


def _data(n=40, d=3, seed=0):
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, d))
    y = np.sin(X[:, 0]) + 0.1 * X[:, 1]
    return X, y


def _labels(y):
    return np.where(y > np.median(y), "up", "down")


CASES = {
    "ridge": lambda X, y: KernelRidge(bandwidth=2.0, alpha=0.1).fit(X, y),
    "ridge-kernel-object": lambda X, y: KernelRidge(LaplaceKernel(1.5), alpha=0.1).fit(X, y),
    "ridge-mahalanobis": lambda X, y: KernelRidge(
        "mahalanobis_laplace", kernel_params={"M": torch.eye(X.shape[1]) * 0.5}, alpha=0.1
    ).fit(X, y),
    "ridge-cg": lambda X, y: KernelRidge(alpha=0.1, solver="cg").fit(X, y),
    "ridge-multi-output": lambda X, y: KernelRidge(alpha=0.1).fit(X, np.stack([y, -y], 1)),
    "classifier": lambda X, y: KernelClassifier(alpha=0.1).fit(X, _labels(y)),
    "gp": lambda X, y: GaussianProcessRegressor(bandwidth=1.0, alpha=0.1).fit(X, y),
    "gp-optimized": lambda X, y: GaussianProcessRegressor("gaussian", optimize=True).fit(X, y),
    "ridge-eigenpro": lambda X, y: KernelRidge(alpha=0.1, solver="eigenpro").fit(X, y),
    "ridge-float32": lambda X, y: KernelRidge(alpha=0.1, dtype="float32").fit(X, y),
    "rfm": lambda X, y: RFMRegressor(iters=2).fit(X, y),
    "rfm-diagonal": lambda X, y: RFMRegressor(iters=1, M="diagonal").fit(X, y),
    "rfm-classifier": lambda X, y: RFMClassifier(iters=1).fit(X, _labels(y)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_predicts_identically(case, tmp_path):
    X, y = _data()
    est = CASES[case](X, y)
    path = est.save(tmp_path / "model.safetensors")
    loaded = type(est).load(path)
    Xq, _ = _data(n=15, seed=1)
    np.testing.assert_array_equal(np.asarray(loaded.predict(Xq)), np.asarray(est.predict(Xq)))
    if isinstance(est, GaussianProcessRegressor):
        for a, b in zip(loaded.predict(Xq, return_std=True), est.predict(Xq, return_std=True)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if hasattr(est, "predict_proba"):
        np.testing.assert_array_equal(loaded.predict_proba(Xq), est.predict_proba(Xq))
    p0, p1 = est.get_params(), loaded.get_params()
    assert p0.keys() == p1.keys()
    for k in p0:
        if isinstance(p0[k], torch.Tensor | dict) or hasattr(p0[k], "_gram"):
            assert repr(p0[k]) == repr(p1[k])
        else:
            assert p0[k] == p1[k], k
    # a loaded estimator is an ordinary one: it refits and saves again
    loaded.fit(X, y if "classifier" not in case else _labels(y))
    loaded.save(tmp_path / "again.safetensors")
    assert [p.name for p in tmp_path.iterdir()] != [] and not list(tmp_path.glob(".*tmp*"))


class _MyKernel(LaplaceKernel):
    """A user's kernel: its code is not in kernelens, so it cannot be rebuilt from JSON."""


def test_custom_kernel_subclass_is_refused(tmp_path):
    X, y = _data()
    est = KernelRidge(_MyKernel(1.0), alpha=0.1).fit(X, y)
    with pytest.raises(TypeError, match="custom Kernel subclass"):
        est.save(tmp_path / "m.safetensors")
    assert not list(tmp_path.iterdir())


def test_unfitted_is_refused(tmp_path):
    with pytest.raises(NotFittedError):
        KernelRidge().save(tmp_path / "m.safetensors")


def _rewrite(path, edit_header=None, edit_tensors=None):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    tensors = st_load(path.read_bytes())
    header = json.loads(meta["kernelens"])
    if edit_header:
        edit_header(header)
    if edit_tensors:
        edit_tensors(tensors)
    path.write_bytes(st_save(tensors, metadata={"kernelens": json.dumps(header)}))


def test_load_checks_class_version_checksum_and_format(tmp_path):
    X, y = _data()
    path = KernelRidge(alpha=0.1).fit(X, y).save(tmp_path / "m.safetensors")
    with pytest.raises(EstimatorFileError, match="holds a KernelRidge, not a RFMRegressor"):
        RFMRegressor.load(path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes())
    _rewrite(bad, edit_tensors=lambda t: t["dual_coef_"].mul_(1.0000001))
    with pytest.raises(EstimatorFileError, match="corrupted"):
        KernelRidge.load(bad)
    bad.write_bytes(path.read_bytes())
    _rewrite(bad, edit_header=lambda h: h.update(version=99))
    with pytest.raises(EstimatorFileError, match="format version 99"):
        KernelRidge.load(bad)
    bad.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(EstimatorFileError, match="not a readable safetensors file"):
        KernelRidge.load(bad)
    bad.write_bytes(st_save({"a": torch.zeros(2)}))
    with pytest.raises(EstimatorFileError, match="not a saved kernelens estimator"):
        KernelRidge.load(bad)
    with pytest.raises(EstimatorFileError, match="no saved estimator"):
        KernelRidge.load(tmp_path / "missing.safetensors")


def test_file_holds_no_pickle(tmp_path):
    X, y = _data()
    path = KernelClassifier(alpha=0.1).fit(X, _labels(y)).save(tmp_path / "m.safetensors")
    raw = path.read_bytes()
    assert b"\x80\x04\x95" not in raw and b"\x80\x05\x95" not in raw  # pickle protocol 4/5
