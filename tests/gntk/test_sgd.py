"""The defining property: one SGD step changes the states by -eta NTK_S dL/dh + O(eta^2)."""

from __future__ import annotations

import itertools

import pytest
import torch
from models import TinyTransformer, params_of
from torch import nn

from kernelens.gntk import global_ntk


def _loss(h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((h - target) ** 2).sum() + (h**3).sum() / 3


CASES = {
    "lstm": (lambda: nn.LSTM(2, 3, batch_first=True), (3, 5, 2), {}),
    "gru_2layer": (lambda: nn.GRU(2, 3, num_layers=2, batch_first=True), (3, 5, 2), {}),
    "transformer": (TinyTransformer, (2, 3, 3), {"states": ["blocks.0", "blocks.1"]}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_sgd_step_moves_states_by_minus_eta_ntk_grad(name: str) -> None:
    torch.manual_seed(0)
    make, shape, kw = CASES[name]
    model = make().double()
    x = torch.randn(*shape, dtype=torch.float64)
    G = global_ntk(model, x, **kw)
    sys = G._system
    theta = params_of(model)
    h0 = G.states.detach()
    target = torch.randn_like(h0)
    hv = h0.clone().requires_grad_(True)
    (dl_dh,) = torch.autograd.grad(_loss(hv, target), hv)
    predicted = -G.ntk.matvec(dl_dh.reshape(-1))

    def states(p):
        S = sys.rollout(p)
        return S.reshape(-1) if G.select.shape[0] == S.numel() else G.select.matvec(S.reshape(-1))

    leaves = {n: v.clone().requires_grad_(True) for n, v in theta.items()}
    grads = torch.autograd.grad(
        _loss(states(leaves).reshape(h0.shape), target), list(leaves.values()), allow_unused=True
    )
    grads = [torch.zeros_like(v) if g is None else g for v, g in zip(theta.values(), grads)]
    errors = []
    for eta in (1e-3, 5e-4, 2.5e-4):
        stepped = {n: v - eta * g for (n, v), g in zip(theta.items(), grads)}
        with torch.no_grad():
            dh = states(stepped) - h0.reshape(-1)
        errors.append(float((dh - eta * predicted).norm()))
        assert float((dh - eta * predicted).norm()) < 0.05 * float((eta * predicted).norm())
    # the error is second order: halving eta divides it by ~4
    for a, b in itertools.pairwise(errors):
        assert 3.5 < a / b < 4.5
