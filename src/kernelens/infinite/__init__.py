"""Analytic infinite-width NNGP and NTK kernels, and the finite networks they are the limit of.

One description gives both::

    import kernelens.infinite as inf
    net = inf.serial(inf.Dense(512, W_std=1.5, b_std=0.05), inf.Relu(), inf.Dense(1))
    k = net.kernel(x1, x2, get=("nngp", "ntk"))   # namedtuple of [N1, N2] tensors
    model = net.build(input_shape=(5,), seed=0)    # torch.nn.Module

Layer signatures and numbers follow neural-tangents 0.6.5 (``stax``), with NCHW images. See
docs/infinite.md.
"""

from ._network import monte_carlo_kernel
from .layers import (
    ABRelu,
    Abs,
    AvgPool,
    Conv,
    Dense,
    Dropout,
    Elementwise,
    Erf,
    FanInConcat,
    FanInSum,
    FanOut,
    Flatten,
    Gelu,
    GlobalAvgPool,
    Identity,
    InfiniteWidthError,
    Layer,
    LayerNorm,
    LeakyRelu,
    Relu,
    parallel,
    serial,
)

__all__ = [
    "ABRelu",
    "Abs",
    "AvgPool",
    "Conv",
    "Dense",
    "Dropout",
    "Elementwise",
    "Erf",
    "FanInConcat",
    "FanInSum",
    "FanOut",
    "Flatten",
    "Gelu",
    "GlobalAvgPool",
    "Identity",
    "InfiniteWidthError",
    "Layer",
    "LayerNorm",
    "LeakyRelu",
    "Relu",
    "monte_carlo_kernel",
    "parallel",
    "serial",
]
