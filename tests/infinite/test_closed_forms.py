"""Closed-form kernels against independent float64 formulas, quadrature and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special

import kernelens.infinite as inf


def _relu_mlp_reference(x1, x2, depth, W_std, b_std):
    """Arc-cosine recursion (Cho & Saul; Jacot et al.) written with numpy's arccos."""
    d = x1.shape[1]
    k12 = x1 @ x2.T / d
    k11 = np.sum(x1 * x1, 1) / d
    k22 = np.sum(x2 * x2, 1) / d
    ntk = np.zeros_like(k12)
    for layer in range(depth + 1):
        k12 = W_std**2 * k12 + b_std**2
        k11 = W_std**2 * k11 + b_std**2
        k22 = W_std**2 * k22 + b_std**2
        ntk = k12 + W_std**2 * ntk
        if layer == depth:
            break
        norm = np.sqrt(np.outer(k11, k22))
        theta = np.arccos(np.clip(k12 / norm, -1, 1))
        dot = (np.pi - theta) / (2 * np.pi)
        k12 = norm * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
        k11, k22 = k11 / 2, k22 / 2
        ntk = ntk * dot
    return k12, ntk


def _mlp(act, depth=2, W_std=1.5, b_std=0.05, param="ntk"):
    layers = []
    for _ in range(depth):
        layers += [inf.Dense(64, W_std=W_std, b_std=b_std, parameterization=param), act()]
    layers.append(inf.Dense(1, W_std=W_std, b_std=b_std, parameterization=param))
    return inf.serial(*layers)


@pytest.mark.parametrize("depth", [1, 3])
def test_relu_matches_arccos_recursion(rng, depth):
    x1, x2 = rng.normal(size=(6, 5)), rng.normal(size=(4, 5))
    k = _mlp(inf.Relu, depth).kernel(torch.from_numpy(x1), torch.from_numpy(x2))
    nngp, ntk = _relu_mlp_reference(x1, x2, depth, 1.5, 0.05)
    np.testing.assert_allclose(k.nngp.numpy(), nngp, rtol=1e-12)
    np.testing.assert_allclose(k.ntk.numpy(), ntk, rtol=1e-12)


def test_symmetric_call_is_exact_on_the_diagonal(rng):
    x = torch.from_numpy(rng.normal(size=(7, 3)))
    net = _mlp(inf.Relu, 3)
    k = net.kernel(x)
    nngp, ntk = _relu_mlp_reference(x.numpy(), x.numpy(), 3, 1.5, 0.05)
    # the reference's arccos(1 - ulp) ~ 1e-8 makes its diagonal inexact at ~1e-9; ours is exact
    off = ~np.eye(7, dtype=bool)
    np.testing.assert_allclose(k.nngp.numpy()[off], nngp[off], rtol=1e-12)
    np.testing.assert_allclose(k.ntk.numpy()[off], ntk[off], rtol=1e-12)
    np.testing.assert_allclose(np.diag(k.ntk.numpy()), np.diag(ntk), rtol=1e-7)
    assert torch.equal(k.nngp, k.nngp.T) and torch.equal(k.ntk, k.ntk.T)
    # and agrees with the cross call on distinct copies to rounding
    k2 = net.kernel(x, x.clone() + 0.0)
    torch.testing.assert_close(k2.ntk, k.ntk, rtol=1e-14, atol=0)


def test_erf_matches_arcsin_formula(rng):
    x1, x2 = rng.normal(size=(5, 4)), rng.normal(size=(3, 4))
    net = inf.serial(inf.Dense(8, W_std=1.3, b_std=0.2), inf.Erf(), inf.Dense(1, W_std=1.3))
    k = net.kernel(torch.from_numpy(x1), torch.from_numpy(x2))
    c = 1.69 * x1 @ x2.T / 4 + 0.04
    q1 = 1.69 * np.sum(x1**2, 1) / 4 + 0.04
    q2 = 1.69 * np.sum(x2**2, 1) / 4 + 0.04
    den = np.outer(1 + 2 * q1, 1 + 2 * q2)
    kerf = 2 / np.pi * np.arcsin(2 * c / np.sqrt(den))
    kdot = 4 / np.pi / np.sqrt(den - 4 * c**2)
    np.testing.assert_allclose(k.nngp.numpy(), 1.69 * kerf, rtol=1e-12)
    np.testing.assert_allclose(k.ntk.numpy(), 1.69 * kerf + 1.69 * kdot * (c + 0.0), rtol=1e-12)


def _gauss_pair_expectation(f, g, q1, q2, c):
    """E[f(u) g(v)] for a centred Gaussian pair, by adaptive 2D quadrature (scipy)."""
    l11 = math.sqrt(q1)
    l21, l22 = c / l11, math.sqrt(max(q2 - c * c / q1, 0.0))

    def integrand(b, a):
        return f(l11 * a) * g(l21 * a + l22 * b) * math.exp(-(a * a + b * b) / 2) / (2 * math.pi)

    return integrate.dblquad(integrand, -12, 12, -12, 12, epsabs=1e-13, epsrel=1e-12)[0]


def _rule_value(layer, q1, q2, c):
    def t(v):
        return torch.tensor(v, dtype=torch.float64)

    k, kdot = layer.rule.pair(t([c]), t([q1]), t([q2]), True)
    return float(k[0]), float(kdot[0]), float(layer.rule.mean(t([q1]))[0])


def _gelu(x):
    return x * 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _dgelu(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2))) + x * math.exp(-x * x / 2) / math.sqrt(
        2 * math.pi
    )


SMOOTH = [
    (inf.Gelu(), _gelu, _dgelu),
    (inf.Erf(0.7, 1.3, 0.2), lambda x: 0.7 * math.erf(1.3 * x) + 0.2,
     lambda x: 0.7 * 1.3 * 2 / math.sqrt(math.pi) * math.exp(-1.69 * x * x)),
]  # fmt: skip


@pytest.mark.parametrize(("layer", "f", "df"), SMOOTH, ids=["gelu", "erf"])
def test_smooth_activation_rules_against_adaptive_quadrature(layer, f, df):
    q1, q2, c = 0.8, 1.7, 0.6
    k, kdot, mean = _rule_value(layer, q1, q2, c)
    assert k == pytest.approx(_gauss_pair_expectation(f, f, q1, q2, c), rel=1e-8, abs=1e-10)
    assert kdot == pytest.approx(_gauss_pair_expectation(df, df, q1, q2, c), rel=1e-7)
    ref_mean = integrate.quad(lambda a: f(math.sqrt(q1) * a) * math.exp(-a * a / 2), -12, 12,
                              epsabs=1e-13)[0] / math.sqrt(2 * math.pi)  # fmt: skip
    assert mean == pytest.approx(ref_mean, rel=1e-9, abs=1e-12)


KINKED = [
    (inf.ABRelu(-0.3, 1.7), -0.3, 1.7),
    (inf.LeakyRelu(0.1), 0.1, 1.0),
    (inf.Abs(), -1.0, 1.0),
    (inf.Relu(), 0.0, 1.0),
]


@pytest.mark.parametrize(("layer", "a", "b"), KINKED, ids=lambda v: repr(v)[:10])
def test_piecewise_linear_rules_against_monte_carlo(layer, a, b):
    """Kinks defeat adaptive quadrature; 1e6 Gaussian pairs give ~2e-3 and a 5-sigma test."""
    gen = torch.Generator().manual_seed(1)
    q1, q2, c = 0.8, 1.7, -0.6
    z = torch.randn(2, 1_000_000, generator=gen, dtype=torch.float64)
    u = math.sqrt(q1) * z[0]
    v = c / math.sqrt(q1) * z[0] + math.sqrt(q2 - c * c / q1) * z[1]
    k, kdot, mean = _rule_value(layer, q1, q2, c)
    for value, sample in (
        (k, layer.rule(u) * layer.rule(v)),
        (kdot, torch.where(u > 0, b, a) * torch.where(v > 0, b, a)),
        (mean, layer.rule(u)),
    ):
        se = sample.std().item() / math.sqrt(sample.numel())
        assert abs(value - sample.mean().item()) < 5 * se + 1e-12


def test_quadrature_matches_closed_forms():
    t = torch.tensor([[0.3, -0.5, 0.79]], dtype=torch.float64)
    q1 = torch.tensor([[0.8, 0.8, 0.8]], dtype=torch.float64)
    q2 = torch.tensor([[1.7, 1.7, 0.8]], dtype=torch.float64)
    for closed, fn in ((inf.Erf(), torch.erf), (inf.Gelu(), torch.nn.functional.gelu)):
        quad = inf.Elementwise(fn, degree=64)
        k1, d1 = closed.rule.pair(t, q1, q2, True)
        k2, d2 = quad.rule.pair(t, q1, q2, True)
        torch.testing.assert_close(k2, k1, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(d2, d1, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(quad.rule.mean(q1), closed.rule.mean(q1), rtol=1e-10,
                                   atol=1e-12)  # fmt: skip


def test_quadrature_tanh_against_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    q1, q2, c = 1.2, 0.7, 0.5
    z = torch.randn(2, 2_000_000, generator=gen, dtype=torch.float64)
    u = math.sqrt(q1) * z[0]
    v = c / math.sqrt(q1) * z[0] + math.sqrt(q2 - c * c / q1) * z[1]
    prod = torch.tanh(u) * torch.tanh(v)
    dprod = (1 - torch.tanh(u) ** 2) * (1 - torch.tanh(v) ** 2)
    k, kdot, _ = _rule_value(inf.Elementwise(torch.tanh, degree=48), q1, q2, c)
    se = prod.std().item() / math.sqrt(prod.numel())
    assert abs(k - prod.mean().item()) < 5 * se
    se = dprod.std().item() / math.sqrt(dprod.numel())
    assert abs(kdot - dprod.mean().item()) < 5 * se


def test_relu_kernel_equals_monte_carlo_of_built_networks(rng):
    """The kernels of wide built networks average to the analytic ones (both parameterisations)."""
    x1 = torch.from_numpy(rng.normal(size=(3, 4)))
    x2 = torch.from_numpy(rng.normal(size=(2, 4)))
    for param in ("ntk", "standard"):
        layers = [inf.Dense(256, W_std=1.4, b_std=0.1, parameterization=param), inf.Relu(),
                  inf.Dense(1, W_std=1.4, b_std=0.1, parameterization=param)]  # fmt: skip
        net = inf.serial(*layers)
        exact = net.kernel(x1, x2)
        mc = inf.monte_carlo_kernel(net, x1, x2, n_samples=24)
        # NTK: self-averaging, error ~ 1 / sqrt(width * samples); NNGP: ~ 1 / sqrt(samples)
        assert (mc.ntk - exact.ntk).norm() < 0.05 * exact.ntk.norm()
        assert (mc.nngp - exact.nngp).abs().max() < 0.6 * exact.nngp.abs().max()


def test_standard_parameterisation_depends_on_width_ntk_does_not(rng):
    x = torch.from_numpy(rng.normal(size=(3, 4)))

    def net(width, param):
        return inf.serial(inf.Dense(width, b_std=0.1, parameterization=param), inf.Relu(),
                          inf.Dense(1, b_std=0.1, parameterization=param))  # fmt: skip

    a, b = net(16, "ntk").kernel(x), net(512, "ntk").kernel(x)
    assert torch.equal(a.ntk, b.ntk)
    s16, s512 = net(16, "standard").kernel(x), net(512, "standard").kernel(x)
    torch.testing.assert_close(s16.nngp, a.nngp)  # the NNGP is the same in both
    # standard NTK: the readout's weight gradient is the hidden features, so
    # Theta(width) = width * K_hidden + (terms without the width)
    hidden = inf.serial(inf.Dense(16, b_std=0.1), inf.Relu()).kernel(x, get="nngp")
    torch.testing.assert_close(s512.ntk - s16.ntk, (512 - 16) * hidden, rtol=1e-12, atol=0)


def test_special_functions_reference():
    # guard the reference constants used above: erf'(x) = 2 / sqrt(pi) exp(-x^2)
    assert special.erf(0.3) == pytest.approx(math.erf(0.3))
