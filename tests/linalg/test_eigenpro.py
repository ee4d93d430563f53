"""EigenPro iteration and the kernel-system front end, against dense float64 solves."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from kernelens.kernels import make_kernel
from kernelens.linalg import (
    ConvergenceWarning,
    eigenpro_solve,
    kernel_operator,
    solve_kernel_system,
)


def _gaussian(h: float = 2.0):
    def k(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(torch.cdist(A, B) ** 2) / (2 * h**2))

    return k


def _data(n: int, d: int = 3, dtype: torch.dtype = torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=dtype)
    # smooth targets: most of their mass lies on the kernel's top eigendirections
    Y = torch.stack([torch.sin(X[:, 0]) + X[:, 1] ** 2 / 3, X[:, 1] * X[:, 2]], dim=1)
    return X, Y


def _exact(k, X, Y, shift: float) -> np.ndarray:
    K = k(X, X).double().numpy()
    return scipy.linalg.solve(K + shift * np.eye(len(K)), Y.double().numpy(), assume_a="pos")


def test_eigenpro_reaches_tol_and_reports_the_true_residual() -> None:
    X, Y = _data(800)
    k, shift = _gaussian(), 1e-2
    # subsample_size defaults to min(n, 2000) = n here: exact eigendirections, batch = n
    res = eigenpro_solve(k, X, Y, shift=shift, top_q=40, tol=1e-3, max_epochs=40)
    assert res.converged, res.history
    K = k(X, X)
    true = ((K + shift * torch.eye(800, dtype=X.dtype)) @ res.x - Y).norm(dim=0) / Y.norm(dim=0)
    torch.testing.assert_close(res.residual_norm, true)
    assert bool((true <= 1e-3).all())
    # close to the exact solution in prediction at the training points
    ref = _exact(k, X, Y, shift)
    pred, pred_ref = (K @ res.x).numpy(), K.numpy() @ ref
    assert np.linalg.norm(pred - pred_ref) / np.linalg.norm(pred_ref) < 1e-2


def test_preconditioning_allows_larger_steps_at_a_fixed_batch_size() -> None:
    # same batch size, same epochs: damping the top directions lets the step grow from
    # ~1/lambda_1 to ~1/lambda_{q+1}, and the residual falls much faster
    X, Y = _data(800)
    k, shift = _gaussian(), 1e-2
    kw = {"shift": shift, "batch_size": 200, "max_epochs": 5, "tol": 1e-12, "warn": False}
    plain = eigenpro_solve(k, X, Y, top_q=0, **kw)
    pre = eigenpro_solve(k, X, Y, top_q=40, subsample_size=400, **kw)
    # only eigenvalues above beta / batch_size are worth damping at this batch size
    assert plain.top_q == 0 and 0 < pre.top_q <= 40
    assert pre.step_size > 10 * plain.step_size
    # measured: ~0.07 vs ~0.5 after 5 epochs; demand 3x
    assert float(pre.residual_norm.max()) * 3 < float(plain.residual_norm.max())


def test_fixed_point_is_the_exact_regularised_solution() -> None:
    # a warm start at the exact solution stays there (every fixed point solves the system)
    X, Y = _data(300)
    k, shift = _gaussian(), 1e-1
    exact = torch.from_numpy(_exact(k, X, Y, shift))
    res = eigenpro_solve(k, X, Y, shift=shift, top_q=20, subsample_size=150, x0=exact, tol=1e-8)
    assert res.converged and res.epochs == 1
    torch.testing.assert_close(res.x, exact, rtol=1e-6, atol=1e-8)


def test_vector_targets_float32_and_warning() -> None:
    X, Y = _data(400, dtype=torch.float32)
    with pytest.warns(ConvergenceWarning, match="eigenpro_solve did not reach"):
        res = eigenpro_solve(
            _gaussian(),
            X,
            Y[:, 0],
            shift=1e-2,
            top_q=20,
            subsample_size=200,
            max_epochs=1,
            tol=1e-6,
        )
    assert res.x.shape == (400,) and res.x.dtype == torch.float32
    assert res.residual_norm.shape == () and not res.converged
    assert len(res.history) == 1


def test_eigenpro_bad_input() -> None:
    X, Y = _data(50)
    with pytest.raises(ValueError, match="inconsistent"):
        eigenpro_solve(_gaussian(), X, Y[:40])
    with pytest.raises(ValueError, match="smaller than subsample_size"):
        eigenpro_solve(_gaussian(), X, Y, top_q=50, subsample_size=50)
    with pytest.raises(ValueError, match="shift"):
        eigenpro_solve(_gaussian(), X, Y, shift=-1.0)
    with pytest.raises(TypeError, match="callable"):
        eigenpro_solve(None, X, Y)
    with pytest.raises(TypeError, match="dtype"):
        eigenpro_solve(_gaussian(), X, Y.float())


# -- solve_kernel_system ---------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_solve_kernel_system_matches_scipy(solver: str) -> None:
    X, Y = _data(500)
    k, shift = make_kernel("laplace", bandwidth=2.0), 1e-2
    res = solve_kernel_system(k, X, Y, shift=shift, solver=solver, tol=1e-10, rank=50)
    assert res.solver == solver and res.converged
    ref = _exact(k, X, Y, shift)
    np.testing.assert_allclose(res.x.numpy(), ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    assert bool((res.residual_norm <= 1e-9).all())


def test_auto_picks_cholesky_or_cg_by_memory_budget() -> None:
    X, Y = _data(400)
    k = _gaussian()
    roomy = solve_kernel_system(k, X, Y, shift=1e-2)
    assert roomy.solver == "cholesky" and roomy.iterations == 0
    # 3 * 400^2 * 8 bytes = 3.8 MB does not fit 2 MB: matrix-free CG within the budget
    tight = solve_kernel_system(k, X, Y, shift=1e-2, memory_budget=2 * 2**20, tol=1e-10, rank=30)
    assert tight.solver == "cg" and tight.converged
    np.testing.assert_allclose(
        tight.x.numpy(), roomy.x.numpy(), rtol=0, atol=1e-6 * float(roomy.x.abs().max())
    )
    ep = solve_kernel_system(
        k, X, Y[:, 0], shift=1e-2, solver="eigenpro", tol=1e-3, max_iter=40, rank=30
    )
    assert ep.solver == "eigenpro" and ep.converged and ep.x.shape == (400,)


def test_kernel_operator_for_plain_callables_and_kernels() -> None:
    X, _ = _data(120)
    V = torch.randn(120, 3, dtype=torch.float64)
    for k in (_gaussian(), make_kernel("gaussian", bandwidth=2.0)):
        op = kernel_operator(k, X, memory_budget=2**20)
        assert op.symmetric and op.shape == (120, 120)
        torch.testing.assert_close(op.matmat(V), k(X, X) @ V)


def test_solve_kernel_system_bad_input() -> None:
    X, Y = _data(30)
    with pytest.raises(ValueError, match="solver"):
        solve_kernel_system(_gaussian(), X, Y, shift=1e-2, solver="lu")
    with pytest.raises(ValueError, match="shift"):
        solve_kernel_system(_gaussian(), X, Y, shift=-1.0)
