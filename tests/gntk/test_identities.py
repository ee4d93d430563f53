"""Operator identities: P P^-1 = I, adjoints, K in Kronecker form, the rank bounds."""

from __future__ import annotations

import pytest
import torch
from models import TinyTransformer, custom_params, tanh_cell
from torch import nn

from kernelens.gntk import global_ntk

I, H = 2, 3


def _models():
    torch.manual_seed(0)
    x = torch.randn(3, 4, I, dtype=torch.float64)
    out = {
        "rnn": (nn.RNN(I, H, batch_first=True).double(), x, {}),
        "gru_2layer": (nn.GRU(I, H, num_layers=2, batch_first=True).double(), x, {}),
        "lstm_hc": (nn.LSTM(I, H, num_layers=2, batch_first=True).double(), x, {"states": "h+c"}),
        "custom": (
            tanh_cell,
            x,
            {"h0": torch.zeros(H, dtype=torch.float64), "params": custom_params(H, I)},
        ),
        "transformer": (
            TinyTransformer().double(),
            torch.randn(2, 3, 3, dtype=torch.float64),
            {"states": ["blocks.0", "blocks.1"]},
        ),
    }
    return out


MODELS = _models()


@pytest.fixture(params=list(MODELS), scope="module")
def G(request):
    model, x, kw = MODELS[request.param]
    return global_ntk(model, x, **kw)


def test_p_times_p_inverse_is_identity(G) -> None:
    n = G.P.shape[0]
    eye = torch.eye(n, dtype=torch.float64)
    P, Pinv = G.P.to_dense(), G.P_inverse.to_dense()
    torch.testing.assert_close(P @ Pinv, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(Pinv @ P, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(G.P_inverse.adjoint().to_dense(), Pinv.T, atol=1e-13, rtol=0)


def test_p_is_causal_and_unit_lower_triangular(G) -> None:
    """With states ordered by time within each example, P is block-lower-triangular."""
    if len(G.full_state_shape) == 2:  # named submodules: ordered by the forward pass
        pytest.skip("no time axis")
    B, T = G.full_state_shape[:2]
    R = G.P.shape[0] // (B * T)
    P = G.P.to_dense().reshape(B, T, R, B, T, R)
    for t in range(T - 1):
        assert float(P[:, t, :, :, t + 1 :].abs().max()) == 0.0
    for b in range(B):  # no example feeds another
        others = [c for c in range(B) if c != b]
        assert float(P[b][:, :, others].abs().max()) == 0.0
    for t in range(T):  # unit diagonal blocks where the state has one layer
        blk = torch.stack([P[b, t, :, b, t] for b in range(B)])
        assert float(blk.diagonal(dim1=1, dim2=2).sub(1).abs().max()) == 0.0


def test_adjoint_of_p(G) -> None:
    n = G.P.shape[0]
    g = torch.Generator().manual_seed(1)
    u = torch.randn(n, 4, generator=g, dtype=torch.float64)
    v = torch.randn(n, 4, generator=g, dtype=torch.float64)
    lhs = (G.P.matmat(u) * v).sum(0)
    rhs = (u * G.P.rmatmat(v)).sum(0)
    assert float((lhs - rhs).abs().max()) <= 1e-12 * float(lhs.abs().max())


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.RNN(I, H, batch_first=True),
        lambda: nn.GRU(I, H, num_layers=2, batch_first=True),
        lambda: nn.LSTM(I, H, batch_first=True),
    ],
)
def test_k_equals_its_kronecker_form(make) -> None:
    torch.manual_seed(2)
    rnn = make().double()
    x = torch.randn(3, 4, I, dtype=torch.float64)
    kron = global_ntk(rnn, x, method="kronecker").K.to_dense()
    jvp = global_ntk(rnn, x, method="jvp").K.to_dense()
    assert float((kron - jvp).abs().max()) <= 1e-12 * float(jvp.abs().max())
    # and the explicit Kronecker sum B_g (Z_g Z_g^T (x) I) B_g^T from the core
    G = global_ntk(rnn, x)
    core = G.kronecker_core()
    assert all(Z.shape[0] == 3 * 4 for Z, _ in core.values())


def test_rnn_kronecker_core_is_explicit() -> None:
    """For h_t = tanh(a_t): K = D (Z Z^T (x) I_H) D, D = diag(1 - h_t^2), Z = [x, h, 1, 1]."""
    torch.manual_seed(3)
    rnn = nn.RNN(I, H, batch_first=True).double()
    x = torch.randn(2, 5, I, dtype=torch.float64)
    G = global_ntk(rnn, x)
    ((Z, rank),) = G.kronecker_core().values()
    h = G.states.reshape(-1, H)
    hprev = torch.cat([torch.zeros(2, 1, H, dtype=torch.float64), G.states[:, :-1]], 1)
    one = torch.ones(10, 1, dtype=torch.float64)
    torch.testing.assert_close(Z, torch.cat([x.reshape(10, I), hprev.reshape(10, H), one, one], 1))
    D = torch.diag((1 - h**2).reshape(-1))
    K = D @ torch.kron(Z @ Z.T, torch.eye(H, dtype=torch.float64)) @ D
    torch.testing.assert_close(G.K.to_dense(), K, atol=1e-13, rtol=0)
    assert rank == I + H + 1


@pytest.mark.parametrize(
    ("make", "bound"),
    [
        (lambda: nn.RNN(I, H, batch_first=True), H * (H + I + 1)),
        (lambda: nn.GRU(I, H, batch_first=True), H * (3 * I + 3 * H + 4)),
        (lambda: nn.LSTM(I, H, batch_first=True), 4 * H * (H + I + 1)),
    ],
)
def test_rank_bound_holds(make, bound: int) -> None:
    torch.manual_seed(4)
    rnn = make().double()
    x = torch.randn(12, 6, I, dtype=torch.float64)  # S = 216 states >> the bound
    G = global_ntk(rnn, x)
    assert G.rank_bound() == min(bound, G.ntk.shape[0], G._system.n_params())
    N = G.ntk.to_dense()
    ev = torch.linalg.eigvalsh(N)
    rank = int((ev > 1e-10 * ev.max()).sum())
    assert rank <= G.rank_bound()
    K_ev = torch.linalg.eigvalsh(G.K.to_dense())
    core = sum(m * r for _, r, m in G._system.site_matrices().values())
    assert int((K_ev > 1e-10 * K_ev.max()).sum()) <= core


def test_vanilla_rnn_rank_bound_is_attained_by_k() -> None:
    """rank(K) = H rank(G) exactly (B is invertible), and NTK_S = P K P^T has the same rank."""
    torch.manual_seed(5)
    rnn = nn.RNN(I, H, batch_first=True).double()
    x = torch.randn(12, 6, I, dtype=torch.float64)
    G = global_ntk(rnn, x)
    ev = torch.linalg.eigvalsh(G.ntk.to_dense())
    assert int((ev > 1e-9 * ev.max()).sum()) == H * (H + I + 1) == G.rank_bound()
