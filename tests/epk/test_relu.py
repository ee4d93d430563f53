"""Issue 10, item 10: piecewise-linear networks are exact at the defaults (kinks located)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from kernelens.epk import ExactPathKernel, fit
from kernelens.epk.kinks import KinkLocator
from kernelens.epk.reference import reference_path_decomposition

RELU_OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.5),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=0.05),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
}


def _relu_net(depth: int, act=nn.ReLU) -> nn.Module:
    torch.manual_seed(1)
    hidden = [nn.Linear(2, 8), act()] + [
        m for _ in range(depth - 1) for m in (nn.Linear(8, 8), act())
    ]
    return nn.Sequential(*hidden, nn.Linear(8, 3)).double()


def _train(toy_data, opt_name: str, depth: int, act=nn.ReLU):
    model = _relu_net(depth, act)
    X, y = toy_data()
    return fit(model, X, y, optimizer=RELU_OPTIMIZERS[opt_name](model.parameters()), epochs=2,
               batch_size=6)  # fmt: skip


def _first_layer_kinks(traj):
    """Exact kinks of a one-hidden-layer net: its pre-activations are affine in t."""

    def kinks(s, x):
        w0, w1 = traj.weights(s), traj.weights(s + 1)
        z0 = w0["0.weight"] @ x + w0["0.bias"]
        z1 = w1["0.weight"] @ x + w1["0.bias"]
        t = -z0 / (z1 - z0)
        return sorted(float(v) for v in t[(z0 * z1 < 0)])

    return kinks


@pytest.mark.parametrize("opt_name", sorted(RELU_OPTIMIZERS))
def test_one_hidden_layer_matches_a_reference_with_analytic_kinks(toy_data, x_test, opt_name):
    traj = _train(toy_data, opt_name, depth=1)
    kinks = _first_layer_kinks(traj)
    assert sum(len(kinks(s, x)) for s in range(traj.num_steps) for x in x_test) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exact at the defaults: no warning
        rep = ExactPathKernel(traj).verify(x_test, attributions=True)
    assert rep.passed and rep.max_rel_error <= 1e-12
    ref = reference_path_decomposition(traj, x_test, nodes=2, breakpoints=kinks)
    torch.testing.assert_close(ref.step_integrals.sum(0), ref.network - ref.initial,
                               rtol=0, atol=1e-13)  # fmt: skip
    err = (rep.details.attributions - ref.attributions).abs().max()
    assert float(err / ref.attributions.abs().max()) < 1e-12


@pytest.mark.parametrize("opt_name", sorted(RELU_OPTIMIZERS))
def test_deeper_piecewise_linear_nets_are_exact_at_defaults(toy_data, x_test, opt_name):
    traj = _train(toy_data, opt_name, depth=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = ExactPathKernel(traj).verify(x_test)
    assert rep.passed and rep.max_rel_error <= 1e-12
    if opt_name == "sgd":  # what ignoring the kinks costs
        without = ExactPathKernel(traj, locate_kinks=False, max_depth=3)
        assert without.verify(x_test, strict=False).max_rel_error > 1e-9


@pytest.mark.parametrize("act", [nn.LeakyReLU, nn.ReLU6, nn.Hardtanh])
def test_other_piecewise_linear_activations(toy_data, x_test, act):
    traj = _train(toy_data, "adamw", depth=2, act=act)
    rep = ExactPathKernel(traj).verify(x_test)
    assert rep.passed and rep.max_rel_error <= 1e-12


def test_kinks_of_the_first_layer_are_located_to_round_off(toy_data, x_test):
    traj = _train(toy_data, "sgd", depth=1)
    epk = ExactPathKernel(traj)
    w0, w1 = epk.path.weights(0), epk.path.weights(1)
    delta = {k: w1[k] - w0[k] for k in w0}
    found = KinkLocator(epk.path.view, epk.path.names, None).locate(x_test, w0, delta)
    exact = _first_layer_kinks(traj)
    for t, x in enumerate(x_test):
        assert found[t] == pytest.approx(exact(0, x), abs=1e-14)


def test_missed_target_warns_naming_steps(toy_data, x_test):
    traj = _train(toy_data, "sgd", depth=2)
    epk = ExactPathKernel(traj, locate_kinks=False, max_depth=1)
    with pytest.warns(UserWarning, match=r"quadrature missed rtol=1e-12 at step\(s\) .*error "
                      r"estimate [0-9.e-]+ relative"):  # fmt: skip
        d = epk.decompose(x_test, attributions=False)
    assert d.unconverged > 0


def test_kink_refinement_without_vmap_gives_the_same_roots(toy_data, x_test, monkeypatch):
    import kernelens.epk.kinks as kinks_mod

    traj = _train(toy_data, "momentum", depth=2)
    epk = ExactPathKernel(traj)
    w0, w1 = epk.path.weights(0), epk.path.weights(1)
    delta = {k: w1[k] - w0[k] for k in w0}
    locator = KinkLocator(epk.path.view, epk.path.names, None)
    batched = locator.locate(x_test, w0, delta)

    def no_batching_rule(_f):
        def fail(*_a):
            raise NotImplementedError("no batching rule")

        return fail

    monkeypatch.setattr(kinks_mod, "vmap", no_batching_rule)
    looped = locator.locate(x_test, w0, delta)
    # the same kinks; a root may differ in its last bits (the batched and looped forwards
    # round differently), so the locations agree to round-off, not bit for bit
    assert [len(r) for r in looped] == [len(r) for r in batched]
    for a, b in zip(looped, batched, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert any(batched)
