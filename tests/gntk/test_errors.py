"""Bad input gets a clear error that names the cause and the fix."""

from __future__ import annotations

import pytest
import torch
from models import TinyTransformer, custom_params, tanh_cell
from torch import nn

from kernelens.gntk import alignment, global_ntk

X = torch.randn(2, 3, 2, dtype=torch.float64)


def test_batch_first_false_names_the_fix() -> None:
    rnn = nn.GRU(2, 3).double()
    with pytest.raises(ValueError, match=r"batch_first=True"):
        global_ntk(rnn, X)


def test_unsupported_module_without_states() -> None:
    with pytest.raises(ValueError, match=r"states=\["):
        global_ntk(nn.Linear(2, 3).double(), X)


def test_unsupported_recurrent_options() -> None:
    with pytest.raises(ValueError, match="bidirectional"):
        global_ntk(nn.RNN(2, 3, bidirectional=True, batch_first=True).double(), X)
    with pytest.raises(ValueError, match="proj_size"):
        global_ntk(nn.LSTM(2, 3, proj_size=2, batch_first=True).double(), X)


def test_subclass_changing_forward_is_refused() -> None:
    class Scaled(nn.RNN):
        def forward(self, x, hx=None):
            out, h = super().forward(x, hx)
            return 2 * out, h

    with pytest.raises(ValueError, match="differs from the standard cell"):
        global_ntk(Scaled(2, 3, batch_first=True).double(), X)


def test_states_naming_no_submodule() -> None:
    model = TinyTransformer().double()
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"no submodule.*Did you mean 'blocks.0'"):
        global_ntk(model, x, states=["block.0"])
    with pytest.raises(TypeError, match="non-empty list"):
        global_ntk(model, x, states=[])


def test_states_that_never_run_or_return_tuples() -> None:
    model = TinyTransformer().double()
    model.unused = nn.Linear(4, 4).double()
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="did not run"):
        global_ntk(model, x, states=["blocks.0", "unused"])

    class WithRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.RNN(2, 3, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[0]

    with pytest.raises(TypeError, match="not a tensor"):
        global_ntk(WithRNN().double(), X, states=["rnn"])


def test_nan_input() -> None:
    x = X.clone()
    x[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        global_ntk(nn.RNN(2, 3, batch_first=True).double(), x)


def test_shapes_dtypes_and_states_choice() -> None:
    rnn = nn.RNN(2, 3, batch_first=True).double()
    with pytest.raises(ValueError, match=r"\[B, T, I\]"):
        global_ntk(rnn, X[0])
    with pytest.raises(ValueError, match="input_size"):
        global_ntk(rnn, torch.randn(2, 3, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        global_ntk(rnn, X.float())
    with pytest.raises(ValueError, match="states"):
        global_ntk(rnn, X, states="h+c")
    with pytest.raises(ValueError, match="method"):
        global_ntk(rnn, X, method="dense")


def test_custom_cell_arguments() -> None:
    p = custom_params(3, 2)
    with pytest.raises(TypeError, match="h0="):
        global_ntk(tanh_cell, X, params=p)
    with pytest.raises(TypeError, match="params="):
        global_ntk(tanh_cell, X, h0=torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="kronecker"):
        global_ntk(
            tanh_cell, X, h0=torch.zeros(3, dtype=torch.float64), params=p, method="kronecker"
        )
    G = global_ntk(tanh_cell, X, h0=torch.zeros(3, dtype=torch.float64), params=p)
    with pytest.raises(ValueError, match="no weight sites"):
        G.kronecker_core()


def test_diverging_rollout_is_reported() -> None:
    def blowup(h, x, p):
        return p["a"] * h + x.sum(-1, keepdim=True) + 1

    p = {"a": torch.tensor(1e200, dtype=torch.float64)}
    with pytest.raises(ValueError, match="NaN or Inf"):
        global_ntk(blowup, X, h0=torch.ones(1, dtype=torch.float64), params=p)


def test_partial_trace_needs_time_and_alignment_needs_shapes() -> None:
    model = TinyTransformer().double()
    G = global_ntk(model, torch.randn(2, 3, 3, dtype=torch.float64), states=["blocks.0"])
    with pytest.raises(ValueError, match="time axis"):
        G.partial_trace("time")
    with pytest.raises(ValueError, match="over"):
        G.partial_trace("space")
    with pytest.raises(ValueError, match="one shape"):
        alignment(torch.eye(3), torch.eye(4))


def test_unknown_site_name() -> None:
    G = global_ntk(nn.RNN(2, 3, batch_first=True).double(), X)
    with pytest.raises(ValueError, match="site"):
        G.site_gram("l0.rz")
