"""Property tests on random small shapes: all methods agree with the dense reference, the
kernel is symmetric positive semi-definite, and output modes are consistent."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ntk_models import reference_ntk
from torch import nn

from kernelens import empirical_ntk

ACTS = [nn.Tanh, nn.ReLU, nn.GELU, nn.Sigmoid]
SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@st.composite
def mlp_case(draw):
    d_in = draw(st.integers(1, 6))
    widths = draw(st.lists(st.integers(1, 7), min_size=0, max_size=2))
    d_out = draw(st.integers(1, 4))
    act = draw(st.sampled_from(ACTS))
    bias = draw(st.booleans())
    seq = draw(st.integers(0, 3))  # 0: plain vectors, else a sequence axis (mean-pooled)
    n1, n2 = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    layers, d = [], d_in
    for w in widths:
        layers += [nn.Linear(d, w, bias=bias), act()]
        d = w
    layers.append(nn.Linear(d, d_out, bias=bias))
    body = nn.Sequential(*layers)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body

        def forward(self, x):
            y = self.body(x)
            return y.mean(1) if seq else y

    shape = (d_in,) if not seq else (seq, d_in)
    x1 = torch.randn(n1, *shape, dtype=torch.float64)
    x2 = torch.randn(n2, *shape, dtype=torch.float64)
    return Net().double(), x1, x2


@st.composite
def conv_case(draw):
    c_in = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, c_in]))
    c_out = groups * draw(st.integers(1, 2))
    k = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 2))
    dilation = draw(st.integers(1, 2))
    padding = draw(st.integers(0, 2))
    mode = draw(st.sampled_from(["zeros", "reflect", "circular"]))
    size = draw(st.integers(dilation * (k - 1) + 1 + max(0, 1 - padding), 7))
    if mode != "zeros":
        padding = min(padding, size - 1)
    n1, n2 = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    conv = nn.Conv2d(
        c_in,
        c_out,
        k,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=mode,
    )

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv
            self.head = nn.Linear(c_out, 2)

        def forward(self, x):
            return self.head(torch.tanh(self.conv(x)).mean((2, 3)))

    x1 = torch.randn(n1, c_in, size, size + 1, dtype=torch.float64)
    x2 = torch.randn(n2, c_in, size, size + 1, dtype=torch.float64)
    return Net().double(), x1, x2


@SETTINGS
@given(mlp_case(), st.sampled_from(["structured", "jacobian", "ntvp", "auto"]))
def test_random_mlps_match_reference(case, method):
    model, x1, x2 = case
    ref = reference_ntk(model, x1, x2)
    assert rel_err(empirical_ntk(model, x1, x2, method=method), ref) < 1e-10


@SETTINGS
@given(conv_case())
def test_random_convolutions_match_reference(case):
    model, x1, x2 = case
    ref = reference_ntk(model, x1, x2)
    assert rel_err(empirical_ntk(model, x1, x2, method="structured"), ref) < 1e-10


@SETTINGS
@given(mlp_case())
def test_kernel_is_psd_and_modes_consistent(case):
    model, x1, _ = case
    K = empirical_ntk(model, x1)
    n, _, o, _ = K.shape
    flat = K.permute(0, 2, 1, 3).reshape(n * o, n * o)
    assert torch.allclose(flat, flat.T, atol=1e-12)
    assert torch.linalg.eigvalsh(flat).min() > -1e-10 * max(1.0, float(flat.abs().max()))
    diag = empirical_ntk(model, x1, output="diagonal")
    trace = empirical_ntk(model, x1, output="trace")
    assert torch.allclose(diag, torch.einsum("ijaa->ija", K), atol=1e-12)
    assert torch.allclose(trace, diag.sum(-1), atol=1e-12)
