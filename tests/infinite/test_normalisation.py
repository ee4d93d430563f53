"""Limits beyond neural-tangents, checked by the empirical NTK of wide built networks:
LayerNorm after a nonlinearity (centring by E[phi]), LayerNorm over all axes of an image, and
sums of a non-zero-mean branch with a skip connection (the cross term of the means)."""

from __future__ import annotations

import pytest
import torch
from infinite_limits import check_limit

import kernelens.infinite as inf
from kernelens.infinite._state import input_state

ARCHS = {
    "relu_layernorm": (
        lambda w: inf.serial(
            inf.Dense(w, W_std=1.4, b_std=0.3), inf.Relu(), inf.LayerNorm(),
            inf.Dense(w, W_std=1.2), inf.Erf(), inf.Dense(1, b_std=0.1),
        ),
        (5,),
    ),
    "image_layernorm_all_axes": (
        lambda w: inf.serial(
            inf.Conv(w, (3, 3), padding="SAME", b_std=0.4), inf.Erf(0.8, 1.0, 0.5),
            inf.LayerNorm(axis=(1, 2, 3)), inf.Conv(w, (2, 2)), inf.Relu(), inf.Flatten(),
            inf.Dense(1),
        ),
        (2, 5, 5),
    ),
    "image_layernorm_channels": (
        lambda w: inf.serial(
            inf.Conv(w, (3, 3), padding="CIRCULAR", b_std=0.4), inf.Gelu(),
            inf.LayerNorm(axis=1, eps=1e-3), inf.GlobalAvgPool(), inf.Dense(1),
        ),
        (2, 4, 4),
    ),
    "skip_plus_relu_branch": (
        lambda w: inf.serial(
            inf.Dense(w, b_std=0.2), inf.FanOut(2),
            inf.parallel(inf.serial(inf.Relu(), inf.Dense(w, b_std=0.5), inf.Relu()),
                         inf.Identity()),
            inf.FanInSum(), inf.Dense(1),
        ),
        (4,),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_converges(name):
    make, shape = ARCHS[name]
    x = torch.randn(4, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    # per-position LayerNorm estimates its statistics from the channels at each position; its
    # finite-width bias (E[Theta_w] - Theta) is still ~3% at width 256 and ~1% at 1024
    check_limit(make, x, width=1024 if name == "image_layernorm_channels" else 256)


def test_centring_matters():
    """Without subtracting E[phi] the LayerNorm kernel would be visibly different: the mean of
    ReLU features is a large part of their second moment."""
    make, shape = ARCHS["relu_layernorm"]
    x = torch.randn(4, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    net = make(8)
    pre = inf.serial(*net.layers[:2]).apply(input_state(x, None, diagonal=True, want_ntk=False))
    centred = net.layers[2].apply(pre).nngp
    uncentred = pre.nngp / torch.sqrt(torch.outer(pre.var1, pre.var1))
    assert (centred - uncentred).abs().max() > 0.3
    # the centred kernel of one example with itself is 1 (variance after normalisation)
    torch.testing.assert_close(centred.diagonal(), torch.ones(4, dtype=torch.float64))
