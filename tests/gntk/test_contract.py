"""The gntk operators pass the LinearOperator contract, each against an independent dense
matrix (torch.func oracles and explicit formulas, float64)."""

from __future__ import annotations

import torch
from models import dense_jjt, params_of, torch_states
from torch import nn
from torch.func import jacrev

from kernelens.gntk import global_ntk
from kernelens.linalg.testing import LinearOperatorContract

B, T, I, H = 2, 3, 2, 3


def _rnn_case():
    torch.manual_seed(0)
    rnn = nn.RNN(I, H, batch_first=True).double()
    x = torch.randn(B, T, I, dtype=torch.float64)
    return rnn, x, global_ntk(rnn, x)


def _dense_n(rnn: nn.RNN, x: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """N = dF/dh - I assembled from per-step Jacobians of torch's own cell (jacrev)."""
    cell = nn.RNNCell(I, H).double()
    cell.load_state_dict({k[:-3]: v for k, v in rnn.state_dict().items()})
    N = torch.zeros(B, T, H, B, T, H, dtype=torch.float64)
    for b in range(B):
        for t in range(1, T):
            xt = x[b, t][None]
            N[b, t, :, b, t - 1] = jacrev(lambda h, xt=xt: cell(xt, h[None])[0])(
                states[b, t - 1]
            ).detach()
    return N.reshape(B * T * H, -1)


class TestNTKOperator(LinearOperatorContract):
    rtol = 1e-10

    def make(self):
        torch.manual_seed(1)
        lstm = nn.LSTM(I, H, batch_first=True).double()
        x = torch.randn(B, T, I, dtype=torch.float64)
        return global_ntk(lstm, x).ntk, dense_jjt(torch_states(lstm, x), params_of(lstm))


class TestPropagator(LinearOperatorContract):
    rtol = 1e-10

    def make(self):
        rnn, x, G = _rnn_case()
        eye = torch.eye(B * T * H, dtype=torch.float64)
        return G.P, torch.linalg.inv(eye - _dense_n(rnn, x, G.states))


class TestPropagatorInverse(LinearOperatorContract):
    rtol = 1e-12

    def make(self):
        rnn, x, G = _rnn_case()
        return G.P_inverse, torch.eye(B * T * H, dtype=torch.float64) - _dense_n(rnn, x, G.states)


class TestKroneckerK(LinearOperatorContract):
    rtol = 1e-12

    def make(self):
        _, x, G = _rnn_case()
        h = G.states
        prev = torch.cat([torch.zeros(B, 1, H, dtype=torch.float64), h[:, :-1]], 1)
        one = torch.ones(B * T, 1, dtype=torch.float64)
        Z = torch.cat([x.reshape(-1, I), prev.reshape(-1, H), one, one], 1)
        D = torch.diag((1 - h**2).reshape(-1))
        return G.K, D @ torch.kron(Z @ Z.T, torch.eye(H, dtype=torch.float64)) @ D


class TestSelection(LinearOperatorContract):
    def make(self):
        torch.manual_seed(2)
        lstm = nn.LSTM(I, H, batch_first=True).double()
        G = global_ntk(lstm, torch.randn(B, T, I, dtype=torch.float64))
        full = torch.eye(B * T * 2 * H, dtype=torch.float64).reshape(B, T, 2, H, -1)
        return G.select, full[:, :, 0].reshape(B * T * H, -1)


class TestPartialTraceOverTime(LinearOperatorContract):
    rtol = 1e-10

    def make(self):
        rnn, x, G = _rnn_case()
        N = dense_jjt(torch_states(rnn, x), params_of(rnn)).reshape(B, T, H, B, T, H)
        return G.partial_trace("time"), torch.einsum("bthcts->bhcs", N).reshape(B * H, -1)


class TestSiteGram(LinearOperatorContract):
    def make(self):
        _, _, G = _rnn_case()
        Z, _ = G.kronecker_core()["l0.gates"]
        return G.site_gram("l0.gates"), Z @ Z.T
