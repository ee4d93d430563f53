"""Bad input and unsupported compositions raise errors that name the layer and the fix."""

from __future__ import annotations

import pytest
import torch

import kernelens.infinite as inf

X = torch.randn(3, 4, dtype=torch.float64)
IMG = torch.randn(3, 2, 5, 5, dtype=torch.float64)


@pytest.mark.parametrize(
    ("net", "x", "match"),
    [
        (inf.serial(inf.Conv(4, (3, 3)), inf.Relu()), IMG, "keeps spatial axes"),
        (inf.serial(inf.Relu(), inf.Dense(1)), X, r"Relu\(\) needs .*Gaussian"),
        (inf.serial(inf.Dense(4), inf.Relu(), inf.Erf(), inf.Dense(1)), X, "Erf"),
        (inf.serial(inf.Conv(4, (3, 3)), inf.Flatten(), inf.Relu(), inf.Dense(1)), IMG, "Flatten"),
        (inf.serial(inf.Dense(4), inf.Dense(1)), IMG, r"Dense\(4.*Flatten"),
        (inf.serial(inf.Conv(4, (3,)), inf.Flatten(), inf.Dense(1)), IMG, "1D convolution"),
        (inf.serial(inf.Conv(4, (7, 7)), inf.Flatten(), inf.Dense(1)), IMG, "larger than"),
        (inf.serial(inf.FanOut(2), inf.Dense(1)), X, "FanInSum"),
        (inf.serial(inf.Dense(3), inf.FanInSum()), X, "FanOut"),
        (inf.serial(inf.FanOut(2), inf.parallel(inf.Dense(1))), X, "2 streams"),
        (inf.serial(inf.FanOut(2), inf.parallel(inf.Dense(3), inf.Dense(1))), X, "one output"),
        (
            inf.serial(
                inf.FanOut(2),
                inf.parallel(inf.Dense(2), inf.Dense(3)),
                inf.FanInSum(),
                inf.Dense(1),
            ),
            X,
            "one shape",
        ),
        (
            inf.serial(
                inf.Dense(4),
                inf.FanOut(2),
                inf.parallel(inf.Relu(), inf.Identity()),
                inf.FanInSum(),
                inf.Dense(1),
            ),
            X,
            "share their features",
        ),
        (
            inf.serial(
                inf.Conv(3, (3, 3)), inf.FanOut(2), inf.FanInConcat(), inf.Flatten(), inf.Dense(1)
            ),
            IMG,
            "axis=1",
        ),
        (
            inf.serial(
                inf.Conv(3, (3, 3)), inf.LayerNorm(axis=(2, 3)), inf.Flatten(), inf.Dense(1)
            ),
            IMG,
            "instance normalisation",
        ),
        (
            inf.serial(
                inf.Conv(3, (3, 3)), inf.LayerNorm(axis=(1, 2)), inf.Flatten(), inf.Dense(1)
            ),
            IMG,
            "some but not all",
        ),
        (inf.serial(inf.Dropout(0.5), inf.Dense(1)), X, "input layer"),
        (
            inf.serial(inf.Dense(3), inf.Relu(), inf.Dropout(0.5), inf.Relu(), inf.Dense(1)),
            X,
            r"Relu\(\) needs",
        ),
    ],
)
def test_unsupported_compositions(net, x, match):
    with pytest.raises(inf.InfiniteWidthError, match=match):
        net.kernel(x)


def test_output_error_mentions_flatten():
    with pytest.raises(ValueError, match=r"Flatten\(\) or GlobalAvgPool\(\)"):
        inf.serial(inf.Conv(2, (3, 3)), inf.Relu()).kernel(IMG)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: inf.Dense(0), "out_dim"),
        (lambda: inf.Dense(3, W_std="a"), "W_std"),
        (lambda: inf.Dense(3, parameterization="mup"), "parameterization"),
        (lambda: inf.Conv(3, (3, 3), padding="FULL"), "padding"),
        (lambda: inf.Conv(3, (3, 3), strides=(1,)), "strides"),
        (lambda: inf.Conv(3, (3, 3, 3)), "1D and 2D"),
        (lambda: inf.Dropout(0.0), "keep probability"),
        (lambda: inf.Dropout(1.5), "keep probability"),
        (lambda: inf.Dropout(0.5, mode="eval"), "mode"),
        (lambda: inf.FanOut(0), "num"),
        (lambda: inf.serial(inf.Dense(2), "relu"), "not a kernelens layer"),
        (lambda: inf.Elementwise("tanh"), "callable"),
        (lambda: inf.Elementwise(torch.tanh, degree=0), "degree"),
        (lambda: inf.LayerNorm(eps=-1.0), "eps"),
    ],
)
def test_bad_layer_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_bad_kernel_arguments():
    net = inf.serial(inf.Dense(3), inf.Relu(), inf.Dense(1))
    with pytest.raises(ValueError, match="get must be"):
        net.kernel(X, get="nngpp")
    with pytest.raises(ValueError, match="get must be"):
        net.kernel(X, get=("ntk", "ntk"))
    with pytest.raises(ValueError, match="x1 must be"):
        net.kernel(torch.randn(3))
    with pytest.raises(ValueError, match="x2 must have"):
        net.kernel(X, torch.randn(2, 5))
    with pytest.raises(ValueError, match="n_samples"):
        inf.monte_carlo_kernel(net, X, n_samples=0)
    with pytest.raises(ValueError, match="input_shape"):
        net.build((0,))
