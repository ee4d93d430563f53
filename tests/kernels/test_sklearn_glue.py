"""What the scikit-learn estimators share: parameter tables checked in fit, one solver rule,
one kernel formula, one set of names (issue 10 item 17, issue 17 items 1 and 6)."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch

import kernelens.linalg.kernel_solve as kernel_solve
from kernelens.kernels import (
    GaussianKernel,
    GaussianProcessRegressor,
    KernelClassifier,
    KernelRidge,
    LaplaceKernel,
    MahalanobisGaussianKernel,
    MahalanobisLaplaceKernel,
    ProductLaplaceKernel,
    make_kernel,
)
from kernelens.linalg import solve_kernel_system
from kernelens.rfm import RFMClassifier, RFMRegressor

ESTIMATORS = [KernelRidge, KernelClassifier, GaussianProcessRegressor, RFMRegressor, RFMClassifier]


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_every_hyper_parameter_has_one_table_entry(cls):
    assert set(cls._parameter_constraints) == set(cls().get_params(deep=False))


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_init_only_stores_and_fit_checks(cls):
    model = cls(dtype="float16")  # no error here
    X, y = np.random.default_rng(0).normal(size=(10, 2)), np.arange(10) % 2
    with pytest.raises(ValueError, match="dtype"):
        model.fit(X, y)
    with pytest.raises(ValueError, match="memory_budget"):
        cls(memory_budget=-1).fit(X, y)


def test_auto_rule_has_one_home(monkeypatch):
    X = np.random.default_rng(0).normal(size=(40, 2))
    y = (X[:, 0] > 0).astype(int)
    assert KernelRidge().fit(X, y).solver_ == "cholesky"
    assert RFMRegressor(iters=0).fit(X, y).solver_ == "cholesky"
    # every estimator follows the one rule in linalg.kernel_solve, which reads only the
    # data's size and the declared budget
    monkeypatch.setattr(kernel_solve, "dense_solve_fits", lambda n, dtype, budget: False)
    assert KernelRidge().fit(X, y).solver_ == "cg"
    assert KernelClassifier().fit(X, y).solver_ == "cg"
    assert RFMRegressor(iters=0).fit(X, y).solver_ == "cg"
    assert RFMClassifier(iters=0).fit(X, y).solver_ == "cg"
    assert (
        solve_kernel_system(
            LaplaceKernel(), torch.tensor(X), torch.tensor(y * 1.0), shift=0.1
        ).solver
        == "cg"
    )


def test_nothing_reads_free_memory():
    import kernelens._memory as memory
    import kernelens.kernels as kernels
    import kernelens.rfm as rfm

    for mod in (memory, kernel_solve, *_submodules(kernels), *_submodules(rfm)):
        src = inspect.getsource(mod)
        for probe in (
            "psutil",
            "virtual_memory",
            "mem_get_info",
            "SC_AVPHYS_PAGES",
            "MemAvailable",
        ):
            assert probe not in src, (mod.__name__, probe)


def _submodules(pkg):
    import importlib
    import pkgutil

    return [
        importlib.import_module(f"{pkg.__name__}.{m.name}")
        for m in pkgutil.iter_modules(pkg.__path__)
    ]


@pytest.mark.parametrize(
    "kernel",
    [
        LaplaceKernel(1.7),
        GaussianKernel(0.9),
        ProductLaplaceKernel(2.0),
        MahalanobisLaplaceKernel(
            torch.diag(torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)), 1.3
        ),
        MahalanobisGaussianKernel(torch.eye(3, dtype=torch.float64) * 0.7, 1.1),
    ],
)
def test_kernel_from_its_distances_is_its_gram(kernel):
    X = torch.randn(20, 3, dtype=torch.float64)
    Z = torch.randn(7, 3, dtype=torch.float64)
    D = kernel.distances(X, Z)
    torch.testing.assert_close(kernel.from_distances(D), kernel(X, Z), rtol=1e-14, atol=0)
    assert torch.equal(D, kernel.distances(X, Z))  # not consumed


def test_route_and_method_are_deprecated_names_of_solver():
    X = torch.randn(30, 2, dtype=torch.float64)
    y = X[:, 0].clone()
    model = KernelRidge().fit(X, y)
    with pytest.warns(FutureWarning, match="solver_"):
        assert model.route_ == model.solver_ == "cholesky"
    with pytest.warns(DeprecationWarning, match="solver="):
        res = solve_kernel_system(make_kernel("laplace"), X, y, shift=0.1, method="cg", tol=1e-10)
    assert res.solver == "cg"
    with pytest.warns(DeprecationWarning, match=r"\.solver"):
        assert res.method == "cg"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve_kernel_system(make_kernel("laplace"), X, y, shift=0.1, solver="cholesky")
