"""NTK_S against the dense oracle J J^T (torch.func.jacrev of the state rollout), float64."""

from __future__ import annotations

import pytest
import torch
from models import (
    MHAStack,
    TinyTransformer,
    custom_params,
    custom_states,
    dense_jjt,
    params_of,
    tanh_cell,
    torch_states,
    transformer_states,
)
from torch import nn

from kernelens.gntk import global_ntk

B, T, I, H = 3, 4, 2, 3


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


RECURRENT = {
    "rnn_tanh": lambda: nn.RNN(I, H, batch_first=True),
    "rnn_relu": lambda: nn.RNN(I, H, nonlinearity="relu", batch_first=True),
    "gru": lambda: nn.GRU(I, H, batch_first=True),
    "lstm": lambda: nn.LSTM(I, H, batch_first=True),
    "rnn_2layer": lambda: nn.RNN(I, H, num_layers=2, batch_first=True),
    "gru_2layer_nobias": lambda: nn.GRU(I, H, num_layers=2, bias=False, batch_first=True),
    "lstm_2layer": lambda: nn.LSTM(I, H, num_layers=2, batch_first=True),
}


@pytest.mark.parametrize("name", list(RECURRENT))
@pytest.mark.parametrize("method", ["kronecker", "jvp"])
def test_recurrent_ntk_matches_dense_jjt(name: str, method: str) -> None:
    torch.manual_seed(1)
    rnn = RECURRENT[name]().double()
    x = torch.randn(B, T, I, dtype=torch.float64)
    G = global_ntk(rnn, x, method=method)
    ref = dense_jjt(torch_states(rnn, x), params_of(rnn))
    assert _rel(G.ntk.to_dense(), ref) < 1e-10
    L = rnn.num_layers
    assert G.state_shape == ((B, T, L, H) if L > 1 else (B, T, H))
    assert G.states.shape == G.state_shape


@pytest.mark.parametrize("layers", [1, 2])
def test_lstm_h_and_c_states(layers: int) -> None:
    torch.manual_seed(2)
    rnn = nn.LSTM(I, H, num_layers=layers, batch_first=True).double()
    x = torch.randn(B, T, I, dtype=torch.float64)
    G = global_ntk(rnn, x, states="h+c")
    ref = dense_jjt(torch_states(rnn, x, with_c=True), params_of(rnn))
    assert _rel(G.ntk.to_dense(), ref) < 1e-10
    assert G.state_shape == ((B, T, 2, 2, H) if layers == 2 else (B, T, 2, H))
    assert G.full_state_shape == (B, T, layers, 2, H)


def test_custom_cell_matches_dense_jjt() -> None:
    x = torch.randn(B, T, I, dtype=torch.float64)
    h0 = 0.1 * torch.randn(B, H, dtype=torch.float64)
    p = custom_params(H, I)
    G = global_ntk(tanh_cell, x, h0=h0, params=p)
    assert G.k_method == "jvp"
    ref = dense_jjt(custom_states(x, h0), p)
    assert _rel(G.ntk.to_dense(), ref) < 1e-10


def test_transformer_block_states_match_dense_jjt() -> None:
    torch.manual_seed(3)
    model = TinyTransformer().double()
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    G = global_ntk(model, x, states=["blocks.0", "blocks.1"])
    ref = dense_jjt(transformer_states(model, x), params_of(model))
    assert _rel(G.ntk.to_dense(), ref) < 1e-10
    assert G.state_shape == (2, 2 * 3 * 4)


def test_torch_multihead_attention_states_match_dense_jjt() -> None:
    torch.manual_seed(3)
    model = MHAStack().double().eval()
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    G = global_ntk(model, x, states=["b0", "b1"])
    ref = dense_jjt(transformer_states(model, x), params_of(model))
    assert _rel(G.ntk.to_dense(), ref) < 1e-10
    ev = torch.linalg.eigvalsh(ref)
    assert int((ev > 1e-10 * ev.max()).sum()) <= G.rank_bound()


def test_transformer_rank_bound_holds() -> None:
    torch.manual_seed(3)
    model = TinyTransformer(d=4).double()
    x = torch.randn(6, 5, 3, dtype=torch.float64)
    G = global_ntk(model, x, states=["blocks.0", "blocks.1"])
    ev = torch.linalg.eigvalsh(G.ntk.to_dense())
    assert int((ev > 1e-10 * ev.max()).sum()) <= G.rank_bound() <= G.ntk.shape[0]
    assert set(G.kronecker_core()) >= {"embed", "blocks.0.attn.qkv", "blocks.1.mlp.2"}


def test_transformer_states_in_the_order_given() -> None:
    torch.manual_seed(3)
    model = TinyTransformer().double()
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    fwd = global_ntk(model, x, states=["blocks.0", "blocks.1"]).ntk.to_dense()
    rev = global_ntk(model, x, states=["blocks.1", "blocks.0"]).ntk.to_dense()
    perm = torch.arange(48).reshape(2, 2, 12).flip(1).reshape(-1)
    assert _rel(rev, fwd[perm][:, perm]) < 1e-12


def test_params_subset_matches_dense() -> None:
    torch.manual_seed(4)
    rnn = nn.GRU(I, H, batch_first=True).double()
    x = torch.randn(B, T, I, dtype=torch.float64)
    names = ["weight_hh_l0", "bias_ih_l0"]
    G = global_ntk(rnn, x, params=names)
    full = params_of(rnn)
    fixed = {n: v for n, v in full.items() if n not in names}
    ref = dense_jjt(lambda p: torch_states(rnn, x)({**fixed, **p}), {n: full[n] for n in names})
    assert G.k_method == "kronecker"
    assert _rel(G.ntk.to_dense(), ref) < 1e-10


def test_ntk_is_the_composition_of_its_factors() -> None:
    torch.manual_seed(5)
    rnn = nn.LSTM(I, H, batch_first=True).double()
    x = torch.randn(B, T, I, dtype=torch.float64)
    G = global_ntk(rnn, x)
    comp = G.select @ G.P @ G.K @ G.P.adjoint() @ G.select.adjoint()
    assert _rel(comp.to_dense(), G.ntk.to_dense()) < 1e-12
    N = G.ntk.to_dense()
    assert float((N - N.T).abs().max()) <= 1e-12 * float(N.abs().max())


def test_small_memory_budget_tiles_to_the_same_result() -> None:
    torch.manual_seed(6)
    rnn = nn.GRU(I, H, num_layers=2, batch_first=True).double()
    x = torch.randn(5, T, I, dtype=torch.float64)
    V = torch.randn(5 * T * 2 * H, 40, dtype=torch.float64)
    big = global_ntk(rnn, x).ntk.matmat(V)
    small_G = global_ntk(rnn, x, memory_budget=1)
    assert len(small_G._system._tiles(40)) > 1
    assert _rel(small_G.ntk.matmat(V), big) < 1e-12


def test_named_states_tile_over_examples_under_a_small_budget() -> None:
    torch.manual_seed(7)
    model = TinyTransformer().double()
    x = torch.randn(3, 3, 3, dtype=torch.float64)
    V = torch.randn(3 * 2 * 3 * 4, 100, dtype=torch.float64)
    states = ["blocks.0", "blocks.1"]
    big = global_ntk(model, x, states=states)
    small = global_ntk(model, x, states=states, memory_budget=1)
    assert len(small._system._tiles(100)) == 3
    for a, b in ((small.ntk, big.ntk), (small.P, big.P), (small.P_inverse, big.P_inverse)):
        assert _rel(a.matmat(V), b.matmat(V)) < 1e-12
