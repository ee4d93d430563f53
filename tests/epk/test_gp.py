"""GP-style predictive variance from the symmetric path kernel (the EPK paper's A.6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev

from kernelens.epk import ExactPathKernel
from kernelens.epk.gp import symmetric_path_kernel


def _jacobian(traj, x, w):
    """[N, O, P] by torch.func.jacrev, independent of the engine."""
    names = traj.param_names

    def f(params):
        return functional_call(traj.model, {**traj.static(), **params}, (x,))

    jac = jacrev(f)({k: w[k] for k in names})
    return torch.cat([jac[k].reshape(x.shape[0], -1, w[k].numel()) for k in names], dim=2)


def _reference_kernel(traj, x1, x2, nodes=2):
    gl_x, gl_w = np.polynomial.legendre.leggauss(nodes)
    out = 0
    for s in range(traj.num_steps):
        lr = traj.step(s).hyper[0]["lr"]
        w0, w1 = traj.weights(s), traj.weights(s + 1)
        for xi, wi in zip(gl_x, gl_w):
            t = (xi + 1) / 2
            w = {k: w0[k] + t * (w1[k] - w0[k]) for k in w0}
            J1, J2 = _jacobian(traj, x1, w), _jacobian(traj, x2, w)
            out = out + lr * wi / 2 * torch.einsum("iap,jbp->iajb", J1, J2)
    return out


def _per_output(K):
    """[N1, O, N2, O] -> the per-output blocks [N1, N2, O]."""
    return K.diagonal(dim1=1, dim2=3)


def test_symmetric_kernel_matches_jacobians(train, toy_data, x_test):
    traj = train("momentum", epochs=1)
    epk = ExactPathKernel(traj)
    X, _ = toy_data()
    K = symmetric_path_kernel(epk, x_test, X[:5])
    ref = _per_output(_reference_kernel(traj, x_test, X[:5]))
    torch.testing.assert_close(K, ref, rtol=1e-12, atol=1e-14)
    own = symmetric_path_kernel(epk, x_test, self_only=True)
    full = _per_output(_reference_kernel(traj, x_test, x_test))
    torch.testing.assert_close(own, full.diagonal(dim1=0, dim2=1).T, rtol=1e-12, atol=1e-14)


def test_predictive_variance_is_the_gp_posterior(train, toy_data, x_test):
    traj = train("sgd", epochs=1)
    epk = ExactPathKernel(traj)
    X, _ = toy_data()
    train_idx = [0, 3, 5, 7]
    var = epk.predictive_variance(x_test, train_indices=train_idx, noise=1e-3)
    Kxx = _per_output(_reference_kernel(traj, X[train_idx], X[train_idx])).permute(2, 0, 1)
    Ktx = _per_output(_reference_kernel(traj, x_test, X[train_idx])).permute(2, 0, 1)
    Ktt = _per_output(_reference_kernel(traj, x_test, x_test)).diagonal(dim1=0, dim2=1)  # [O, T]
    A = Kxx + 1e-3 * torch.eye(len(train_idx), dtype=torch.float64)
    post = Ktt - torch.einsum(
        "otm,otm->ot", Ktx, torch.linalg.solve(A, Ktx.transpose(1, 2)).transpose(1, 2)
    )
    torch.testing.assert_close(var, post.T, rtol=1e-8, atol=1e-14)
    assert bool((var >= 0).all())
    # conditioning on a point makes its variance (nearly) vanish
    at_train = epk.predictive_variance(X[:2], train_indices=[0, 1], noise=1e-9)
    assert float(at_train.max()) < 1e-6 * float(Ktt.max())


def test_predictive_variance_bad_input(train, x_test):
    epk = ExactPathKernel(train("sgd", epochs=1))
    with pytest.raises(ValueError, match=r"train_indices \[40\] never appeared"):
        epk.predictive_variance(x_test, train_indices=[0, 40])
    with pytest.raises(ValueError, match="noise must be a finite non-negative"):
        epk.predictive_variance(x_test, noise=-1.0)
