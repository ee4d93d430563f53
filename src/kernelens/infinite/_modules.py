"""The finite torch modules that :meth:`Layer.build` assembles (NCHW, parameters drawn from a
``torch.Generator`` so that one seed fixes the whole network)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._spatial import pad_amounts

__all__ = [
    "AffineConv",
    "AffineDense",
    "Branches",
    "Chain",
    "Concat",
    "FanOutModule",
    "FixedDropout",
    "Lambda",
    "LayerNormModule",
    "SumModule",
]


class AffineDense(nn.Module):
    """``z = W_std / sqrt(n) x W^T + b_std b`` with ``W, b ~ N(0, 1)`` (``"ntk"``) or
    ``z = x W^T + b`` with ``W ~ N(0, W_std^2 / n)``, ``b ~ N(0, b_std^2)`` (``"standard"``)."""

    def __init__(self, n_in, n_out, W_std, b_std, parameterization, gen, dtype):
        super().__init__()
        self.parameterization = parameterization
        w = torch.randn(n_out, n_in, generator=gen, dtype=dtype)
        b = None if b_std is None else torch.randn(n_out, generator=gen, dtype=dtype)
        if parameterization == "ntk":
            self.w_scale, self.b_scale = W_std / math.sqrt(n_in), b_std
        else:
            w = w * (W_std / math.sqrt(n_in))
            b = None if b is None else b * b_std
            self.w_scale, self.b_scale = 1.0, 1.0
        self.weight = nn.Parameter(w)
        self.bias = None if b is None else nn.Parameter(b)

    def forward(self, x):
        out = F.linear(x, self.weight) * self.w_scale
        if self.bias is not None:
            out = out + self.b_scale * self.bias
        return out


class AffineConv(nn.Module):
    """Convolution with the same two parameterisations (fan-in ``C * prod(filter)``); padding
    ``"SAME"`` pads zeros as XLA does (extra on the high side), ``"CIRCULAR"`` wraps."""

    def __init__(
        self,
        shape,
        n_out,
        filter_shape,
        strides,
        padding,
        W_std,
        b_std,
        parameterization,
        gen,
        dtype,
    ):
        super().__init__()
        c = shape[0]
        self.d = len(filter_shape)
        self.strides = tuple(strides)
        self.padding = padding
        pads = pad_amounts(tuple(shape[1:]), tuple(filter_shape), self.strides, padding)
        self.pad = [p for lo_hi in reversed(pads) for p in lo_hi]  # F.pad: last axis first
        fan_in = c * math.prod(filter_shape)
        w = torch.randn(n_out, c, *filter_shape, generator=gen, dtype=dtype)
        b = None if b_std is None else torch.randn(n_out, generator=gen, dtype=dtype)
        if parameterization == "ntk":
            self.w_scale, self.b_scale = W_std / math.sqrt(fan_in), b_std
        else:
            w = w * (W_std / math.sqrt(fan_in))
            b = None if b is None else b * b_std
            self.w_scale, self.b_scale = 1.0, 1.0
        self.weight = nn.Parameter(w)
        self.bias = None if b is None else nn.Parameter(b)

    def forward(self, x):
        if any(self.pad):
            mode = "circular" if self.padding == "CIRCULAR" else "constant"
            x = F.pad(x, self.pad, mode=mode)
        conv = F.conv1d if self.d == 1 else F.conv2d
        out = conv(x, self.weight, stride=self.strides) * self.w_scale
        if self.bias is not None:
            out = out + self.b_scale * self.bias.reshape(-1, *([1] * self.d))
        return out


class Lambda(nn.Module):
    """A parameter-free function of the input (activations, pooling, flattening)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str) -> None:
        super().__init__()
        self.fn = fn
        self.name = name

    def forward(self, x):
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class LayerNormModule(nn.Module):
    """``(x - mean) / sqrt(var + eps)`` over ``axes`` (population variance, no affine)."""

    def __init__(self, axes: tuple[int, ...], eps: float) -> None:
        super().__init__()
        self.axes, self.eps = axes, eps

    def forward(self, x):
        mean = x.mean(dim=self.axes, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=self.axes, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps)


class FixedDropout(nn.Module):
    """Train-mode dropout whose mask is fixed per example index: ``mask[i] / rate`` multiplies
    example ``i`` of every batch (``rate`` is the keep probability). The masks are a buffer
    ``[max_examples, *shape]`` drawn once from the build seed, so the module is a
    deterministic function that :func:`kernelens.ntk.empirical_ntk` can differentiate."""

    def __init__(self, shape, rate, max_examples, gen, dtype):
        super().__init__()
        self.rate = rate
        keep = torch.rand(max_examples, *shape, generator=gen, dtype=dtype) < rate
        self.register_buffer("mask", keep.to(dtype) / rate)

    def forward(self, x):
        if torch._C._functorch.is_batchedtensor(x):
            # vmap over single examples hides the example index the mask depends on
            raise RuntimeError("FixedDropout needs the whole batch (example index), not vmap.")
        n = x.shape[0]
        if n > self.mask.shape[0]:
            raise ValueError(
                f"FixedDropout holds masks for {self.mask.shape[0]} examples but got a batch "
                f"of {n}; build the network with a larger dropout_examples."
            )
        return x * self.mask[:n]


class Chain(nn.Module):
    """Modules applied in order; a stream is one tensor or a tuple of tensors."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(modules)

    def forward(self, x):
        for m in self.layers:
            x = m(x)
        return x


class Branches(nn.Module):
    """``parallel``: module ``i`` applied to stream ``i``."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(modules)

    def forward(self, xs):
        return tuple(m(x) for m, x in zip(self.branches, xs, strict=True))


class FanOutModule(nn.Module):
    def __init__(self, num: int) -> None:
        super().__init__()
        self.num = num

    def forward(self, x):
        return (x,) * self.num


class SumModule(nn.Module):
    def forward(self, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Concat(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, xs):
        return torch.cat(xs, dim=self.axis)
