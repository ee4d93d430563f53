"""Closed-form kernel-machine gradients and the AGOP against autograd (float64 references)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from kernelens.kernels import KernelRidge, MahalanobisLaplaceKernel
from kernelens.rfm import KernelMachine, RFMRegressor, agop
from kernelens.rfm._agop_gram import gram_route_agop, gram_route_cost

KINDS = ["laplace", "gaussian", "product_laplace"]


def _machine(kind: str, n: int = 30, d: int = 4, c: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(d, d, generator=g, dtype=torch.float64)
    M = B @ B.T / d + 0.1 * torch.eye(d, dtype=torch.float64)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    coef = torch.randn(n, c, generator=g, dtype=torch.float64)
    bw = 1.7
    machine = KernelMachine.build(kind, bw, M, X, coef, torch.zeros(c, dtype=torch.float64))
    return machine, M, X, coef, bw


def _reference_f(kind, M, X, coef, bw, S):
    """An independent autograd-able f(x [d]) -> [c] written from the kernel formulas."""

    def f(x: torch.Tensor, skip: int | None = None) -> torch.Tensor:
        keep = torch.ones(len(X), dtype=torch.bool)
        if skip is not None:
            keep[skip] = False
        diff = x[None, :] - X[keep]  # [n, d]
        if kind == "product_laplace":
            k = torch.exp(-(diff @ S).abs().sum(dim=1) / bw)
        elif kind == "laplace":
            k = torch.exp(-torch.sqrt(((diff @ M) * diff).sum(dim=1)) / bw)
        else:
            k = torch.exp(-((diff @ M) * diff).sum(dim=1) / (2 * bw**2))
        return k @ coef[keep]

    return f


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_autograd_away_from_centres(kind):
    machine, M, X, coef, bw = _machine(kind)
    f = _reference_f(kind, M, X, coef, bw, machine.factor.scale)
    Q = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ref = torch.stack([torch.func.jacrev(f)(q) for q in Q])  # [7, c, d]
    got = machine.gradients(Q)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    # and the predictions themselves
    torch.testing.assert_close(
        machine.predict(Q), torch.stack([f(q) for q in Q]), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_at_a_training_point_leaves_out_its_own_term(kind):
    machine, M, X, coef, bw = _machine(kind)
    f = _reference_f(kind, M, X, coef, bw, machine.factor.scale)
    got = machine.gradients(X[:5])
    for i in range(5):
        if kind == "gaussian":  # smooth: the own term has zero gradient anyway
            ref = torch.func.jacrev(f)(X[i])
        else:  # cone apex: drop the own term (gradient 0 there, as the RFM literature does)
            ref = torch.func.jacrev(lambda x, i=i: f(x, skip=i))(X[i])
        torch.testing.assert_close(got[i], ref, rtol=1e-10, atol=1e-12)


def _reference_agop(grads: torch.Tensor, centering: bool) -> torch.Tensor:
    if centering:
        grads = grads - grads.mean(dim=0, keepdim=True)
    return torch.einsum("qcd,qce->de", grads, grads) / grads.shape[0]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("centering", [False, True])
def test_agop_equals_mean_gradient_outer_product(kind, centering):
    machine, *_ = _machine(kind)
    X = torch.randn(40, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grads = machine.gradients(X)
    ref = _reference_agop(grads, centering)
    got = agop(machine, X, centering=centering)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        agop(machine, X, centering=centering, diagonal=True), ref.diagonal(), rtol=1e-10, atol=1e-12
    )


def test_agop_tiles_give_the_same_result():
    machine, *_ = _machine("laplace", n=400, d=6, c=3)
    Q = torch.randn(300, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    one = agop(machine, Q, memory_budget=1 << 34)
    tiled = agop(machine, Q, memory_budget=1 << 20)  # forces several centre and query tiles
    torch.testing.assert_close(tiled, one, rtol=1e-12, atol=1e-12)


def test_agop_of_a_diagonal_metric_machine():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(25, 5, generator=g, dtype=torch.float64)
    coef = torch.randn(25, 1, generator=g, dtype=torch.float64)
    m = torch.tensor([2.0, 0.0, 0.5, 1.0, 0.0], dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    machine = KernelMachine.build("laplace", 1.3, torch.diag(m), X, coef, zero, diagonal=True)
    dense = KernelMachine.build("laplace", 1.3, torch.diag(m), X, coef, zero)
    assert machine.factor.rank == 3
    Q = torch.randn(9, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(agop(machine, Q), agop(dense, Q), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        agop(machine, Q, diagonal=True), agop(dense, Q).diagonal(), rtol=1e-10, atol=1e-12
    )
    # coordinates the metric ignores have zero gradient
    assert agop(machine, Q, diagonal=True)[[1, 4]].abs().max() == 0


def test_agop_of_a_callable_matches_jacrev():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)
    ).double()
    X = torch.randn(50, 5, dtype=torch.float64)
    J = torch.stack([torch.func.jacrev(lambda x: net(x[None])[0])(x) for x in X])  # [50, 3, 5]
    torch.testing.assert_close(
        agop(net, X, batch_size=16), _reference_agop(J, False), rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(
        agop(net, X, centering=True), _reference_agop(J, True), rtol=1e-10, atol=1e-12
    )
    # a scalar-output callable and a numpy input
    lin = torch.tensor([1.0, -2.0, 0.0, 0.0, 3.0], dtype=torch.float64)
    got = agop(lambda Z: Z @ lin, X.numpy())
    torch.testing.assert_close(got, torch.outer(lin, lin), rtol=1e-12, atol=1e-12)


def test_agop_of_a_fitted_kernel_ridge():
    g = np.random.default_rng(0)
    X = g.normal(size=(40, 3))
    y = np.sin(X[:, 0]) + X[:, 1] ** 2
    M = np.diag([1.0, 0.5, 0.1])
    krr = KernelRidge(MahalanobisLaplaceKernel(torch.tensor(M), bandwidth=2.0), alpha=1e-2).fit(
        X, y
    )
    Xt = torch.tensor(X)
    coef = torch.as_tensor(krr.dual_coef_)[:, None]

    def f(x, skip):
        keep = torch.arange(40) != skip
        d = x[None] - Xt[keep]
        k = torch.exp(-torch.sqrt(((d @ torch.tensor(M)) * d).sum(1)) / 2.0)
        return k @ coef[keep]

    grads = torch.stack([torch.func.jacrev(lambda x, i=i: f(x, i))(Xt[i]) for i in range(40)])
    torch.testing.assert_close(agop(krr, X), _reference_agop(grads, False), rtol=1e-9, atol=1e-12)


def test_rfm_metric_is_the_normalised_agop_of_the_previous_iteration():
    g = np.random.default_rng(1)
    X = g.normal(size=(80, 4))
    y = X[:, 0] ** 2 + X[:, 1]
    plain = RFMRegressor(iters=0, standardize=False).fit(X, y)
    one = RFMRegressor(iters=1, standardize=False).fit(X, y)
    G = agop(plain, X)
    torch.testing.assert_close(one.M_, G / torch.linalg.eigvalsh(G).max(), rtol=1e-9, atol=1e-12)


def test_agop_errors():
    with pytest.raises(NotFittedError):
        agop(RFMRegressor(), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="callable"):
        agop(42, np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"\[b\] or \[b, c\]"):
        agop(lambda Z: Z.sum(), torch.zeros(3, 2))
    machine, *_ = _machine("laplace")
    with pytest.raises(ValueError, match="features"):
        agop(machine, torch.zeros(3, 7, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["laplace", "gaussian"])
@pytest.mark.parametrize("diagonal", [False, True])
def test_gram_route_equals_the_gradient_route(kind, diagonal):
    machine, *_ = _machine(kind, n=60, d=5, c=7)
    Uq = torch.cat(
        [machine.centres[:20], torch.randn(15, machine.factor.rank, dtype=torch.float64)]
    )
    G = machine.u_gradients(Uq)  # [m, c, r]
    flat = G.reshape(-1, G.shape[-1])
    ref_total = (flat * flat).sum(0) if diagonal else flat.T @ flat
    total, grad_sum = gram_route_agop(
        kind,
        machine.bandwidth,
        Uq,
        machine.centres,
        machine.coef,
        diagonal=diagonal,
        memory_budget=1 << 20,
    )
    torch.testing.assert_close(total, ref_total, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(grad_sum, G.sum(0), rtol=1e-9, atol=1e-11)


def test_many_outputs_take_the_gram_route_and_agree():
    # c r >> n: the Gram route is cheaper; compare with the definition via gradients
    machine, *_ = _machine("laplace", n=40, d=30, c=20)
    X = torch.randn(25, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    direct, gram = gram_route_cost(25, 40, 20, 30)
    assert gram < direct
    grads = machine.gradients(X)
    for centering in (False, True):
        ref = _reference_agop(grads, centering)
        torch.testing.assert_close(
            agop(machine, X, centering=centering), ref, rtol=1e-9, atol=1e-11
        )
