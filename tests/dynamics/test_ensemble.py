"""gradient_descent_mse_ensemble against neural-tangents 0.6.5 fixtures (kernels stored with
them, so these tests do not depend on kernelens.infinite)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kernelens.dynamics import Gaussian, gradient_descent_mse_ensemble

FIX = np.load(Path(__file__).parent / "fixtures" / "ensemble.npz")
X_TRAIN = torch.tensor(FIX["x_train"])
X_TEST = torch.tensor(FIX["x_test"])
Y = torch.tensor(FIX["y_train"])


class StoredKernels:
    """A kernel function that serves the stored neural-tangents kernels of one architecture
    and counts its calls."""

    def __init__(self, arch: str) -> None:
        self.arch = arch
        self.calls = 0

    def kernel(self, x1, x2, get):
        self.calls += 1
        if torch.equal(x1, X_TRAIN):
            block = "dd"
        elif torch.equal(x2, X_TRAIN):
            block = "td"
        else:
            block = "tt"
        return SimpleNamespace(**{g: torch.tensor(FIX[f"{self.arch}_{g}_{block}"]) for g in get})


def _rel(a: torch.Tensor, b: np.ndarray) -> float:
    scale = np.abs(b).max()
    return float(np.abs(a.numpy() - b).max() / (scale if scale > 0 else 1.0))


@pytest.mark.parametrize("arch", ["relu2", "relu3"])
@pytest.mark.parametrize("lr", [1.0, 2.5])
@pytest.mark.parametrize("reg", [0.0, 1e-4])
def test_matches_neural_tangents(arch, lr, reg):
    ens = gradient_descent_mse_ensemble(StoredKernels(arch), X_TRAIN, Y, lr, reg)
    times = torch.tensor(FIX["times"])
    for get in ("nngp", "ntk"):
        key = f"{arch}_lr{lr}_reg{reg}_{get}"
        for tname, t in (("t", times), ("inf", None)):
            for where, xt in (("test", X_TEST), ("train", None)):
                g = ens(t, xt, get, compute_cov=True)
                assert isinstance(g, Gaussian)
                exp_mean = FIX[f"{key}_{where}_{tname}_mean"]
                exp_cov = FIX[f"{key}_{where}_{tname}_cov"]
                assert g.mean.shape == exp_mean.shape and g.covariance.shape == exp_cov.shape
                assert _rel(g.mean, exp_mean) < 1e-9
                assert _rel(g.covariance, exp_cov) < 1e-9
            assert _rel(ens(t, X_TEST, get), FIX[f"{key}_test_{tname}_meanonly"]) < 1e-9


def test_get_both_and_kernel_caching():
    src = StoredKernels("relu2")
    ens = gradient_descent_mse_ensemble(src, X_TRAIN, Y, diag_reg=1e-4)
    both = ens(1.0, X_TEST, compute_cov=True)
    assert both._fields == ("nngp", "ntk")
    torch.testing.assert_close(both.ntk.mean, ens(1.0, X_TEST, "ntk"))
    calls = src.calls
    ens(2.0, None, "ntk")
    assert src.calls == calls  # train-train kernels are cached


def test_plain_callable_and_errors():
    src = StoredKernels("relu2")
    ens = gradient_descent_mse_ensemble(src.kernel, X_TRAIN, Y)
    assert ens(None, X_TEST, "nngp").shape == (X_TEST.shape[0], Y.shape[1])
    with pytest.raises(ValueError, match="get must be"):
        ens(1.0, X_TEST, "ntkgp")
    with pytest.raises(TypeError, match="kernelens.infinite"):
        gradient_descent_mse_ensemble(3, X_TRAIN, Y)
    with pytest.raises(ValueError, match="rows"):
        gradient_descent_mse_ensemble(src, X_TRAIN, Y[:-1])(1.0)


@pytest.mark.parametrize("arch", ["relu2", "relu3"])
def test_with_a_kernelens_infinite_network(arch):
    """The same predictions from the analytic kernels of kernelens.infinite (the stax
    architectures the fixtures were generated with)."""
    import kernelens.infinite as inf

    depth, width, w_std, b_std = FIX[f"{arch}_spec"]
    layers = []
    for _ in range(int(depth)):
        layers += [inf.Dense(int(width), W_std=float(w_std), b_std=float(b_std)), inf.Relu()]
    net = inf.serial(*layers, inf.Dense(Y.shape[1], W_std=float(w_std), b_std=float(b_std)))
    ens = gradient_descent_mse_ensemble(net, X_TRAIN, Y, learning_rate=2.5, diag_reg=1e-4)
    times = torch.tensor(FIX["times"])
    for get in ("nngp", "ntk"):
        key = f"{arch}_lr2.5_reg0.0001_{get}"
        g = ens(times, X_TEST, get, compute_cov=True)
        assert _rel(g.mean, FIX[f"{key}_test_t_mean"]) < 1e-9
        assert _rel(g.covariance, FIX[f"{key}_test_t_cov"]) < 1e-9
        g = ens(None, X_TEST, get, compute_cov=True)
        assert _rel(g.mean, FIX[f"{key}_test_inf_mean"]) < 1e-9
        assert _rel(g.covariance, FIX[f"{key}_test_inf_cov"]) < 1e-9
