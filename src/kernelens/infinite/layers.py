"""The layer algebra: every layer is one description with two readings, a kernel rule on
:class:`~kernelens.infinite._state.KernelState` (the infinite-width NNGP and NTK) and a module
builder (the finite torch network with the same parameterisation).

A *stream* is one state (or one tensor, or one shape ``(C, *S)``) or, between ``FanOut`` and a
``FanIn``, a tuple of them. Signatures and defaults follow neural-tangents' ``stax``; images are
NCHW and every ``axis`` argument refers to the torch tensor ``[N, C, H, W]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from . import _modules as M
from ._activations import ABReluRule, ErfRule, GeluRule, QuadratureRule
from ._spatial import (
    conv_cov,
    flatten_cov,
    global_pool_cov,
    pad_amounts,
    pool_cov,
    pool_mean,
)
from ._state import KernelState

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
    "parallel",
    "serial",
]

PARAMETERIZATIONS = ("ntk", "standard")
PADDINGS = ("VALID", "SAME", "CIRCULAR")


class InfiniteWidthError(ValueError):
    """A composition of layers whose infinite-width kernel kernelens cannot compute exactly."""


class _BuildOptions:
    def __init__(self, gen: torch.Generator, dtype: torch.dtype, dropout_examples: int) -> None:
        self.gen, self.dtype, self.dropout_examples = gen, dtype, dropout_examples


def _single(layer: Layer, shape) -> tuple[int, ...]:
    if isinstance(shape, list):
        raise InfiniteWidthError(
            f"{layer!r} receives {len(shape)} streams (after FanOut/parallel); join them first "
            "with FanInSum() or FanInConcat()."
        )
    return shape


def _multi(layer: Layer, shape) -> list:
    if not isinstance(shape, list):
        raise InfiniteWidthError(
            f"{layer!r} joins several streams but receives one; split it first with FanOut(n)."
        )
    return shape


def _check_float(value, name: str, layer: str, *, positive: bool = False, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"{layer}: {name} must be a finite number, got {value!r}.")
    if positive and value <= 0:
        raise ValueError(f"{layer}: {name} must be positive, got {value!r}.")
    return float(value)


def _check_int(value, name: str, layer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive integer, got {value!r}.")
    return int(value)


def _check_param(value: str, layer: str) -> str:
    p = value.lower() if isinstance(value, str) else value
    if p not in PARAMETERIZATIONS:
        raise ValueError(
            f"{layer}: parameterization must be one of {PARAMETERIZATIONS}, got {value!r}."
        )
    return p


def _check_tuple(value, name: str, layer: str, length: int | None = None) -> tuple[int, ...]:
    if isinstance(value, int):
        value = (value,)
    try:
        t = tuple(int(v) for v in value)
    except TypeError:
        raise TypeError(f"{layer}: {name} must be a tuple of integers, got {value!r}.") from None
    if not t or any(v < 1 for v in t) or (length is not None and len(t) != length):
        want = f"{length} " if length else ""
        raise ValueError(f"{layer}: {name} must be {want}positive integers, got {value!r}.")
    if len(t) > 2:
        raise ValueError(f"{layer}: only 1D and 2D windows are supported, got {name}={value!r}.")
    return t


def _check_padding(padding: str, layer: str) -> str:
    p = padding.upper() if isinstance(padding, str) else padding
    if p not in PADDINGS:
        raise ValueError(f"{layer}: padding must be one of {PADDINGS}, got {padding!r}.")
    return p


# ---- pair / self broadcasting -------------------------------------------------------------
def _outer(a1: torch.Tensor, a2: torch.Tensor, k: KernelState, pair: bool) -> torch.Tensor:
    """``a1(x, p) * a2(x', q)`` laid out like the pair (``pair``) or self covariances; ``a1``,
    ``a2`` are ``[n, *S]`` per-position quantities."""
    d = k.ndim_spatial
    full = not k.diagonal and d > 0
    if pair:
        left = a1.reshape(a1.shape[0], 1, *a1.shape[1:], *((1,) * d if full else ()))
        right = a2.reshape(1, a2.shape[0], *((1,) * d if full else ()), *a2.shape[1:])
    else:
        left = a1.reshape(*a1.shape, *((1,) * d if full else ()))
        right = a2.reshape(a2.shape[0], *((1,) * d if full else ()), *a2.shape[1:])
    return left * right


def _sides(k: KernelState, a1: torch.Tensor, a2: torch.Tensor):
    """Broadcast factors (left, right) for the pair, self-1 and self-2 covariances."""
    d = k.ndim_spatial
    full = not k.diagonal and d > 0
    ones = (1,) * d if full else ()

    def pair():
        return (
            a1.reshape(a1.shape[0], 1, *a1.shape[1:], *ones),
            a2.reshape(1, a2.shape[0], *ones, *a2.shape[1:]),
        )

    def single(a):
        return a.reshape(*a.shape, *ones), a.reshape(a.shape[0], *ones, *a.shape[1:])

    return pair, single


# ---- base -----------------------------------------------------------------------------
class Layer:
    """One layer (or a composition) of an infinite-width network description.

    ``kernel(x1, x2, get=...)`` gives the analytic NNGP / NTK, ``build(input_shape, seed)`` the
    finite torch module of the same description.
    """

    #: whether the layer needs covariances between different positions (not only x(p), x'(p))
    needs_full: bool = False

    def out_shape(self, shape):
        """The finite output shape(s) ``(C, *S)`` for input shape(s) ``shape``."""
        raise NotImplementedError

    def apply(self, k):
        """The kernel rule: the state(s) after this layer."""
        raise NotImplementedError

    def module(self, shape, opts: _BuildOptions) -> nn.Module:
        """The finite module for input shape(s) ``shape``."""
        raise NotImplementedError

    def kernel(self, x1, x2=None, get=("nngp", "ntk"), *, memory_budget=None):
        """The infinite-width kernels of this network; see :func:`kernelens.infinite.kernel`."""
        from ._network import network_kernel

        return network_kernel(self, x1, x2, get, memory_budget=memory_budget)

    def build(self, input_shape, seed: int = 0, *, dtype=None, dropout_examples: int = 1024):
        """The finite ``torch.nn.Module`` of this description for inputs ``[N, *input_shape]``.

        Args:
            input_shape: per-example shape, ``(d,)`` or NCHW ``(C, H, W)`` / ``(C, L)``.
            seed: seeds one ``torch.Generator`` that draws every parameter (and dropout mask).
            dtype: parameter dtype (default ``torch.get_default_dtype()``).
            dropout_examples: train-mode ``Dropout`` masks are fixed per example index for this
                many examples (a larger batch raises).
        """
        shape = _check_input_shape(input_shape)
        self.out_shape(shape)
        gen = torch.Generator().manual_seed(int(seed))
        dtype = torch.get_default_dtype() if dtype is None else dtype
        return self.module(shape, _BuildOptions(gen, dtype, int(dropout_examples)))

    def _leaves(self):
        yield self


def _check_input_shape(input_shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except TypeError:
        raise TypeError(f"input_shape must be a tuple of ints, got {input_shape!r}.") from None
    if not 1 <= len(shape) <= 3 or any(s < 1 for s in shape):
        raise ValueError(
            f"input_shape must be (d,), (C, L) or (C, H, W) with positive sizes, got "
            f"{input_shape!r}."
        )
    return shape


# ---- combinators ----------------------------------------------------------------------
class serial(Layer):
    """Layers applied one after another: ``serial(Dense(512), Relu(), Dense(1))``."""

    def __init__(self, *layers: Layer) -> None:
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"serial: argument {i} is {layer!r}, not a kernelens layer.")
        self.layers = tuple(layers)
        self.needs_full = any(layer.needs_full for layer in layers)

    def __repr__(self) -> str:
        return "serial(" + ", ".join(map(repr, self.layers)) + ")"

    def out_shape(self, shape):
        for layer in self.layers:
            shape = layer.out_shape(shape)
        return shape

    def apply(self, k):
        for layer in self.layers:
            k = layer.apply(k)
        return k

    def module(self, shape, opts):
        mods = []
        for layer in self.layers:
            mods.append(layer.module(shape, opts))
            shape = layer.out_shape(shape)
        return M.Chain(mods)

    def _leaves(self):
        for layer in self.layers:
            yield from layer._leaves()


class parallel(Layer):
    """Layer ``i`` applied to stream ``i`` (after ``FanOut``)."""

    def __init__(self, *layers: Layer) -> None:
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"parallel: argument {i} is {layer!r}, not a kernelens layer.")
        self.layers = tuple(layers)
        self.needs_full = any(layer.needs_full for layer in layers)

    def __repr__(self) -> str:
        return "parallel(" + ", ".join(map(repr, self.layers)) + ")"

    def _check(self, n: int) -> None:
        if n != len(self.layers):
            raise InfiniteWidthError(
                f"{self!r} has {len(self.layers)} branches but receives {n} streams."
            )

    def out_shape(self, shape):
        shapes = _multi(self, shape)
        self._check(len(shapes))
        return [layer.out_shape(s) for layer, s in zip(self.layers, shapes, strict=True)]

    def apply(self, ks):
        self._check(len(ks))
        return tuple(layer.apply(k) for layer, k in zip(self.layers, ks, strict=True))

    def module(self, shape, opts):
        return M.Branches([lay.module(s, opts) for lay, s in zip(self.layers, shape, strict=True)])

    def _leaves(self):
        for layer in self.layers:
            yield from layer._leaves()


class Identity(Layer):
    """The identity (a skip connection inside ``parallel``)."""

    def __repr__(self) -> str:
        return "Identity()"

    def out_shape(self, shape):
        return shape

    def apply(self, k):
        return k

    def module(self, shape, opts):
        return nn.Identity()


class FanOut(Layer):
    """``num`` copies of the stream."""

    def __init__(self, num: int) -> None:
        self.num = _check_int(num, "num", "FanOut")

    def __repr__(self) -> str:
        return f"FanOut({self.num})"

    def out_shape(self, shape):
        return [_single(self, shape)] * self.num

    def apply(self, k):
        # the copies share every feature: none has passed through its own random layer yet
        return (k.replace(fresh=False),) * self.num

    def module(self, shape, opts):
        return M.FanOutModule(self.num)


class FanInSum(Layer):
    """The sum of the streams.

    Branches must be independent given the input, except one: every branch but at most one must
    pass through its own ``Dense``/``Conv`` after the ``FanOut``. Means are tracked, so the sum
    of a branch that ends in a nonlinearity and a skip connection is exact (the cross term is
    ``m_a(x) m_b(x')``), where neural-tangents requires zero-mean Gaussian branches.
    """

    def __repr__(self) -> str:
        return "FanInSum()"

    def out_shape(self, shape):
        shapes = _multi(self, shape)
        if any(s != shapes[0] for s in shapes[1:]):
            raise InfiniteWidthError(f"FanInSum(): all streams must have one shape, got {shapes}.")
        return shapes[0]

    def apply(self, ks):
        shared = [i for i, k in enumerate(ks) if not k.fresh]
        if len(shared) > 1:
            raise InfiniteWidthError(
                f"FanInSum(): branches {shared} share their features (none of them passes "
                "through its own Dense/Conv after FanOut), so their correlation is not the sum "
                "of their kernels; give all but one branch an affine layer."
            )
        k0 = ks[0]
        nngp = sum(k.nngp for k in ks)
        ntk = None if k0.ntk is None else sum(k.ntk for k in ks)
        var1 = var2 = None
        if not k0.same:
            var1 = sum(k.var1_ for k in ks)
            var2 = sum(k.var2_ for k in ks)
        nonzero = [i for i, k in enumerate(ks) if _has_mean(k)]
        if len(nonzero) > 1:
            if any(not ks[i].iid for i in nonzero):
                raise InfiniteWidthError(
                    "FanInSum(): a branch with non-zero mean has channels that are not "
                    "identically distributed (after Flatten or FanInConcat), so the cross term "
                    "of the means is not known; add a Dense/Conv to that branch."
                )
            for i in nonzero:
                for j in nonzero:
                    if i != j:
                        nngp = nngp + _outer(ks[i].mean1, ks[j].mean2, k0, True)
                        if not k0.same:
                            var1 = var1 + _outer(ks[i].mean1, ks[j].mean1, k0, False)
                            var2 = var2 + _outer(ks[i].mean2, ks[j].mean2, k0, False)
        return k0.replace(
            nngp=nngp,
            ntk=ntk,
            var1_=var1,
            var2_=var2,
            mean1=sum(k.mean1 for k in ks),
            mean2=sum(k.mean2 for k in ks),
            gaussian=all(k.gaussian for k in ks),
            iid=all(k.iid for k in ks),
            fresh=all(k.fresh for k in ks),
            is_input=all(k.is_input for k in ks),
        )

    def module(self, shape, opts):
        return M.SumModule()


def _has_mean(k: KernelState) -> bool:
    return bool(torch.any(k.mean1 != 0) or torch.any(k.mean2 != 0))


class FanInConcat(Layer):
    """Concatenation of the streams along ``axis`` (of the torch tensor; only the channel axis
    1 is supported: ``axis=-1`` is the channel axis of ``[N, C]`` features, for NCHW images pass
    ``axis=1``). The kernel is the channel-weighted average of the branch kernels."""

    def __init__(self, axis: int = -1) -> None:
        self.axis = int(axis)

    def __repr__(self) -> str:
        return f"FanInConcat(axis={self.axis})"

    def _channel(self, shapes) -> None:
        ndim = 1 + len(shapes[0])
        if self.axis % ndim != 1:
            raise InfiniteWidthError(
                f"{self!r}: only concatenation along the channel axis 1 of [N, C, ...] is "
                f"supported; for inputs of shape [N, *{shapes[0]}] pass axis=1."
            )

    def out_shape(self, shape):
        shapes = _multi(self, shape)
        self._channel(shapes)
        if any(s[1:] != shapes[0][1:] for s in shapes[1:]):
            raise InfiniteWidthError(f"{self!r}: spatial shapes differ: {shapes}.")
        return (sum(s[0] for s in shapes), *shapes[0][1:])

    def apply(self, ks):
        total = sum(k.channels for k in ks)
        w = [k.channels / total for k in ks]

        def avg(ts):
            return sum(wi * t for wi, t in zip(w, ts, strict=True))

        k0 = ks[0]
        return k0.replace(
            nngp=avg([k.nngp for k in ks]),
            ntk=None if k0.ntk is None else avg([k.ntk for k in ks]),
            var1_=None if k0.same else avg([k.var1_ for k in ks]),
            var2_=None if k0.same else avg([k.var2_ for k in ks]),
            mean1=avg([k.mean1 for k in ks]),
            mean2=avg([k.mean2 for k in ks]),
            channels=total,
            gaussian=False,
            iid=False,
            fresh=all(k.fresh for k in ks),
            is_input=all(k.is_input for k in ks),
        )

    def module(self, shape, opts):
        return M.Concat(1)


# ---- affine ---------------------------------------------------------------------------
def _affine(cov: torch.Tensor, W_std: float, b_std: float | None) -> torch.Tensor:
    cov = W_std**2 * cov
    return cov if b_std is None else cov + b_std**2


class Dense(Layer):
    """Fully connected layer ``[N, C] -> [N, out_dim]``.

    ``parameterization="ntk"``: ``z = W_std / sqrt(C) W x + b_std b``, ``W, b ~ N(0, 1)``; the
    kernel does not depend on any width. ``"standard"``: ``W ~ N(0, W_std^2 / C)``,
    ``b ~ N(0, b_std^2)``; the NTK then grows with the input width ``C``.
    """

    def __init__(self, out_dim: int, W_std: float = 1.0, b_std: float | None = None,
                 parameterization: str = "ntk") -> None:  # fmt: skip
        self.out_dim = _check_int(out_dim, "out_dim", "Dense")
        self.W_std = _check_float(W_std, "W_std", "Dense")
        self.b_std = _check_float(b_std, "b_std", "Dense", allow_none=True)
        self.parameterization = _check_param(parameterization, "Dense")

    def __repr__(self) -> str:
        return (f"Dense({self.out_dim}, W_std={self.W_std}, b_std={self.b_std}, "
                f"parameterization={self.parameterization!r})")  # fmt: skip

    def out_shape(self, shape):
        shape = _single(self, shape)
        if len(shape) != 1:
            raise InfiniteWidthError(
                f"{self!r} needs features [N, C] but receives [N, *{shape}]; add Flatten() or "
                "GlobalAvgPool() first (or use a 1x1 Conv on images)."
            )
        return (self.out_dim,)

    def apply(self, k):
        W, b = self.W_std, self.b_std
        ntk = k.ntk
        if self.parameterization == "ntk":
            k = k.map_covariances(lambda c, _: _affine(c, W, b), ntk_fn=lambda t, _: t)
            if ntk is not None:
                ntk = k.nngp + W**2 * ntk
        else:
            if ntk is not None:
                ntk = k.channels * k.nngp + W**2 * ntk
                if b is not None:
                    ntk = ntk + 1.0
            k = k.map_covariances(lambda c, _: _affine(c, W, b), ntk_fn=lambda t, _: t)
        return k.replace(
            ntk=ntk,
            mean1=torch.zeros_like(k.mean1),
            mean2=torch.zeros_like(k.mean2),
            channels=self.out_dim,
            gaussian=True,
            iid=True,
            fresh=True,
            is_input=False,
        )

    def module(self, shape, opts):
        return M.AffineDense(shape[0], self.out_dim, self.W_std, self.b_std,
                             self.parameterization, opts.gen, opts.dtype)  # fmt: skip


class Conv(Layer):
    """Convolution of NCHW images ``[N, C, H, W]`` (or ``[N, C, L]``) with ``out_chan`` filters
    of ``filter_shape``; ``padding`` ``"VALID"``, ``"SAME"`` or ``"CIRCULAR"`` (periodic);
    parameterisations as in :class:`Dense` with fan-in ``C * prod(filter_shape)``."""

    def __init__(self, out_chan: int, filter_shape: Sequence[int],
                 strides: Sequence[int] | None = None, padding: str = "VALID",
                 W_std: float = 1.0, b_std: float | None = None,
                 parameterization: str = "ntk") -> None:  # fmt: skip
        self.out_chan = _check_int(out_chan, "out_chan", "Conv")
        self.filter_shape = _check_tuple(filter_shape, "filter_shape", "Conv")
        d = len(self.filter_shape)
        self.strides = (1,) * d if strides is None else _check_tuple(strides, "strides", "Conv", d)
        self.padding = _check_padding(padding, "Conv")
        self.W_std = _check_float(W_std, "W_std", "Conv")
        self.b_std = _check_float(b_std, "b_std", "Conv", allow_none=True)
        self.parameterization = _check_param(parameterization, "Conv")

    def __repr__(self) -> str:
        return (f"Conv({self.out_chan}, {self.filter_shape}, strides={self.strides}, "
                f"padding={self.padding!r}, W_std={self.W_std}, b_std={self.b_std}, "
                f"parameterization={self.parameterization!r})")  # fmt: skip

    def out_shape(self, shape):
        shape = _single(self, shape)
        d = len(self.filter_shape)
        if len(shape) != 1 + d:
            raise InfiniteWidthError(
                f"{self!r} is a {d}D convolution and needs inputs [N, C, {'H, W' if d == 2 else 'L'}]"
                f", got [N, *{shape}]."
            )
        sizes = shape[1:]
        pads = pad_amounts(sizes, self.filter_shape, self.strides, self.padding)
        out = []
        for n, f, s, (lo, hi) in zip(sizes, self.filter_shape, self.strides, pads, strict=True):
            if n + lo + hi < f:
                raise InfiniteWidthError(
                    f"{self!r}: the filter ({f}) is larger than the padded input ({n + lo + hi})."
                )
            out.append((n + lo + hi - f) // s + 1)
        return (self.out_chan, *out)

    def apply(self, k):
        if k.ndim_spatial != len(self.filter_shape):
            raise InfiniteWidthError(f"{self!r} receives inputs without matching spatial axes.")
        W, b = self.W_std, self.b_std
        d, diag = k.ndim_spatial, k.diagonal

        def conv(c, batch_ndim):
            return conv_cov(c, self.filter_shape, self.strides, self.padding, batch_ndim, d, diag)

        nngp_conv = conv(k.nngp, 2)
        nngp = _affine(nngp_conv, W, b)
        ntk = None
        if k.ntk is not None:
            if self.parameterization == "ntk":
                ntk = W**2 * conv(k.ntk, 2) + nngp
            else:
                fan_in = k.channels * math.prod(self.filter_shape)
                ntk = fan_in * nngp_conv + W**2 * conv(k.ntk, 2)
                if b is not None:
                    ntk = ntk + 1.0
        var1 = var2 = None
        if not k.same:
            var1 = _affine(conv(k.var1_, 1), W, b)
            var2 = _affine(conv(k.var2_, 1), W, b)
        k = k.replace(nngp=nngp, var1_=var1, var2_=var2)
        spatial = tuple(k.nngp.shape[2 : 2 + d])
        zeros = (k.mean1.shape[0], *spatial)
        return k.replace(
            ntk=ntk,
            mean1=k.mean1.new_zeros(zeros),
            mean2=k.mean2.new_zeros((k.mean2.shape[0], *spatial)),
            spatial=spatial,
            channels=self.out_chan,
            gaussian=True,
            iid=True,
            fresh=True,
            is_input=False,
        )

    def module(self, shape, opts):
        return M.AffineConv(shape, self.out_chan, self.filter_shape, self.strides, self.padding,
                            self.W_std, self.b_std, self.parameterization, opts.gen,
                            opts.dtype)  # fmt: skip


# ---- pooling and shape ----------------------------------------------------------------
class AvgPool(Layer):
    """Average pooling over ``window_shape`` windows (``normalize_edges``: divide by the number
    of non-padding pixels instead of the window size, with ``"SAME"`` padding)."""

    needs_full = True

    def __init__(self, window_shape: Sequence[int], strides: Sequence[int] | None = None,
                 padding: str = "VALID", normalize_edges: bool = False) -> None:  # fmt: skip
        self.window_shape = _check_tuple(window_shape, "window_shape", "AvgPool")
        d = len(self.window_shape)
        self.strides = (
            (1,) * d if strides is None else _check_tuple(strides, "strides", "AvgPool", d)
        )
        self.padding = _check_padding(padding, "AvgPool")
        self.normalize_edges = bool(normalize_edges)

    def __repr__(self) -> str:
        return (f"AvgPool({self.window_shape}, strides={self.strides}, "
                f"padding={self.padding!r}, normalize_edges={self.normalize_edges})")  # fmt: skip

    def out_shape(self, shape):
        shape = _single(self, shape)
        d = len(self.window_shape)
        if len(shape) != 1 + d:
            raise InfiniteWidthError(f"{self!r} needs {d} spatial axes, got [N, *{shape}].")
        pads = pad_amounts(shape[1:], self.window_shape, self.strides, self.padding)
        out = [(n + lo + hi - f) // s + 1 for n, f, s, (lo, hi)
               in zip(shape[1:], self.window_shape, self.strides, pads, strict=True)]  # fmt: skip
        if min(out) < 1:
            raise InfiniteWidthError(f"{self!r}: the window is larger than the input {shape}.")
        return (shape[0], *out)

    def _args(self):
        return self.window_shape, self.strides, self.padding, self.normalize_edges

    def apply(self, k):
        d = k.ndim_spatial
        k2 = k.map_covariances(lambda c, bn: pool_cov(c, *self._args(), bn, d))
        spatial = tuple(k2.nngp.shape[2 : 2 + d])
        return k2.replace(
            mean1=pool_mean(k.mean1, *self._args()),
            mean2=pool_mean(k.mean2, *self._args()),
            spatial=spatial,
        )

    def module(self, shape, opts):
        window, strides, padding, normalize = self._args()
        pads = pad_amounts(shape[1:], window, strides, padding)
        flat = [p for lo_hi in reversed(pads) for p in lo_hi]
        pool = (
            torch.nn.functional.avg_pool1d if len(window) == 1 else torch.nn.functional.avg_pool2d
        )

        def fn(x):
            if any(flat):
                mode = "circular" if padding == "CIRCULAR" else "constant"
                xp = torch.nn.functional.pad(x, flat, mode=mode)
            else:
                xp = x
            out = pool(xp, window, strides)
            if normalize and padding == "SAME" and any(flat):
                ones = torch.nn.functional.pad(torch.ones_like(x[:1, :1]), flat)
                out = out / pool(ones, window, strides)
            return out

        return M.Lambda(fn, repr(self))


class GlobalAvgPool(Layer):
    """The average over all spatial positions: ``[N, C, *S] -> [N, C]``."""

    needs_full = True

    def __repr__(self) -> str:
        return "GlobalAvgPool()"

    def out_shape(self, shape):
        shape = _single(self, shape)
        if len(shape) < 2:
            raise InfiniteWidthError(f"GlobalAvgPool() needs spatial axes, got [N, *{shape}].")
        return (shape[0],)

    def apply(self, k):
        d = k.ndim_spatial
        k2 = k.map_covariances(lambda c, bn: global_pool_cov(c, bn, d))
        dims = tuple(range(1, 1 + d))
        return k2.replace(mean1=k.mean1.mean(dims), mean2=k.mean2.mean(dims), spatial=())

    def module(self, shape, opts):
        dims = tuple(range(2, 1 + len(shape)))
        return M.Lambda(lambda x: x.mean(dim=dims), "GlobalAvgPool()")


class Flatten(Layer):
    """``[N, C, *S] -> [N, C * prod(S)]`` (C order, as ``torch.flatten``)."""

    def __repr__(self) -> str:
        return "Flatten()"

    def out_shape(self, shape):
        return (math.prod(_single(self, shape)),)

    def apply(self, k):
        d = k.ndim_spatial
        if d == 0:
            return k
        k2 = k.map_covariances(lambda c, bn: flatten_cov(c, bn, d, k.diagonal))
        dims = tuple(range(1, 1 + d))
        # positions differ in variance, so the flattened features are not identically
        # distributed: an activation right after Flatten would need a mixture (refused)
        return k2.replace(
            mean1=k.mean1.mean(dims),
            mean2=k.mean2.mean(dims),
            spatial=(),
            channels=k.channels * math.prod(k.spatial),
            gaussian=False,
            iid=False,
        )

    def module(self, shape, opts):
        return M.Lambda(lambda x: x.flatten(1), "Flatten()")


# ---- normalisation and dropout --------------------------------------------------------
class LayerNorm(Layer):
    """``(x - mean) / sqrt(var + eps)`` over ``axis`` (axes of the torch tensor ``[N, C, ...]``;
    they must include the channel axis 1, and either no spatial axis or all of them).

    The limit subtracts the channel-averaged mean ``E[phi]`` and divides by the resulting
    standard deviation, so it is exact after a nonlinearity too (neural-tangents covers only
    Gaussian inputs, where the mean is zero; there both agree).
    """

    def __init__(self, axis: int | Sequence[int] = -1, eps: float = 1e-12) -> None:
        self.axis = axis
        self.eps = _check_float(eps, "eps", "LayerNorm")
        if self.eps < 0:
            raise ValueError(f"LayerNorm: eps must be >= 0, got {eps!r}.")

    def __repr__(self) -> str:
        return f"LayerNorm(axis={self.axis!r}, eps={self.eps})"

    def _axes(self, shape) -> tuple[int, ...]:
        ndim = 1 + len(shape)
        axes = (self.axis,) if isinstance(self.axis, int) else tuple(self.axis)
        try:
            norm = sorted({int(a) % ndim for a in axes})
        except (TypeError, ValueError):
            raise TypeError(f"{self!r}: axis must be an int or a tuple of ints.") from None
        if 0 in norm:
            raise InfiniteWidthError(f"{self!r}: normalising over the batch axis 0 is not "
                                     "a per-example function; leave axis 0 out.")  # fmt: skip
        if 1 not in norm:
            raise InfiniteWidthError(
                f"{self!r} on inputs [N, *{shape}] does not normalise over the channel axis 1: "
                "per-channel statistics over a finite set of positions (instance normalisation) "
                "stay random as the width grows, so there is no deterministic kernel limit. "
                "Normalise over axis=1 (per position) or over all of (1, 2, ...) (per example)."
            )
        spatial = [a for a in norm if a > 1]
        if spatial and len(spatial) != len(shape) - 1:
            raise InfiniteWidthError(
                f"{self!r}: normalising over some but not all spatial axes is not supported; "
                f"use axis=1 or axis={tuple(range(1, ndim))}."
            )
        return tuple(norm)

    def out_shape(self, shape):
        shape = _single(self, shape)
        self._axes(shape)
        return shape

    def apply(self, k):
        d = k.ndim_spatial
        over_space = d > 0 and len(self._axes((k.channels, *k.spatial))) > 1
        dims = tuple(range(1, 1 + d))

        def stats(mean, q):
            if over_space:
                mu = mean.mean(dims, keepdim=True).expand_as(mean)
                s2 = q.mean(dims, keepdim=True).expand_as(q) - mu * mu
            else:
                mu, s2 = mean, q - mean * mean
            return mu, s2 + self.eps

        mu1, s1 = stats(k.mean1, k.position_variances(1))
        mu2, s2 = (mu1, s1) if k.same else stats(k.mean2, k.position_variances(2))
        scale = torch.rsqrt(_outer(s1, s2, k, True))
        nngp = (k.nngp - _outer(mu1, mu2, k, True)) * scale
        ntk = None if k.ntk is None else k.ntk * scale
        var1 = var2 = None
        if not k.same:
            var1 = (k.var1_ - _outer(mu1, mu1, k, False)) * torch.rsqrt(_outer(s1, s1, k, False))
            var2 = (k.var2_ - _outer(mu2, mu2, k, False)) * torch.rsqrt(_outer(s2, s2, k, False))
        return k.replace(
            nngp=nngp,
            ntk=ntk,
            var1_=var1,
            var2_=var2,
            mean1=torch.zeros_like(k.mean1),
            mean2=torch.zeros_like(k.mean2),
        )

    def module(self, shape, opts):
        return M.LayerNormModule(self._axes(shape), self.eps)


class Dropout(Layer):
    """Dropout with keep probability ``rate`` (neural-tangents' convention; torch's ``p`` is the
    drop probability ``1 - rate``). ``mode="train"``: kept units are scaled by ``1 / rate``,
    which multiplies the kernel of an example with itself at the same position by ``1 / rate``
    and leaves every other entry unchanged. ``mode="test"``: the identity."""

    def __init__(self, rate: float, mode: str = "train") -> None:
        if mode not in ("train", "test"):
            raise ValueError(f'Dropout: mode must be "train" or "test", got {mode!r}.')
        rate = _check_float(rate, "rate", "Dropout")
        if not 0 < rate <= 1:
            raise ValueError(
                f"Dropout: rate is the keep probability and must lie in (0, 1], got {rate!r} "
                "(torch's p is the drop probability: rate = 1 - p)."
            )
        self.rate, self.mode = rate, mode

    def __repr__(self) -> str:
        return f"Dropout({self.rate}, mode={self.mode!r})"

    def out_shape(self, shape):
        return _single(self, shape)

    def apply(self, k):
        if self.mode == "test" or self.rate == 1.0:
            return k
        if k.is_input:
            raise InfiniteWidthError(f"{self!r} cannot be applied to the input layer.")
        d = k.ndim_spatial
        full = not k.diagonal and d > 0
        factor = 1.0 / self.rate

        def pos_eye(t: torch.Tensor, batch_ndim: int) -> torch.Tensor:
            if not full:
                return t.new_ones(())
            sizes = t.shape[batch_ndim : batch_ndim + d]
            eye = t.new_ones(())
            for k_ in range(d):
                e = torch.eye(sizes[k_], dtype=t.dtype, device=t.device)
                shape = [1] * (2 * d)
                shape[k_], shape[d + k_] = sizes[k_], sizes[k_]
                eye = eye * e.reshape(shape)
            return eye

        def self_scale(c, batch_ndim):
            return c * (1 + (factor - 1) * pos_eye(c, batch_ndim))

        if k.same:
            n = k.nngp.shape[0]
            eye_n = torch.eye(n, dtype=k.nngp.dtype, device=k.nngp.device)
            mask = eye_n.reshape(n, n, *([1] * (k.nngp.ndim - 2))) * pos_eye(k.nngp, 2)
            scale = 1 + (factor - 1) * mask
            out = k.replace(nngp=k.nngp * scale, ntk=None if k.ntk is None else k.ntk * scale)
        else:
            out = k.replace(var1_=self_scale(k.var1_, 1), var2_=self_scale(k.var2_, 1))
        return out.replace(gaussian=False)

    def module(self, shape, opts):
        if self.mode == "test" or self.rate == 1.0:
            return nn.Identity()
        return M.FixedDropout(shape, self.rate, opts.dropout_examples, opts.gen, opts.dtype)


# ---- activations ----------------------------------------------------------------------
class _Activation(Layer):
    rule: object

    def out_shape(self, shape):
        return _single(self, shape)

    def apply(self, k):
        if not k.gaussian:
            raise InfiniteWidthError(
                f"{self!r} needs identically distributed, zero-mean Gaussian inputs, i.e. an "
                "affine layer (Dense/Conv, optionally followed by pooling or LayerNorm of a "
                "Gaussian) right before it; it follows a nonlinearity, the input, Flatten, "
                "FanInConcat or train-mode Dropout here."
            )
        want = k.ntk is not None
        q1 = k.position_variances(1)
        q2 = q1 if k.same else k.position_variances(2)
        pair, single = _sides(k, q1, q2)
        ql, qr = pair()
        nngp, dot = self.rule.pair(k.nngp, ql, qr, want)
        var1 = var2 = None
        if not k.same:
            var1 = self.rule.pair(k.var1_, *single(q1), False)[0]
            var2 = self.rule.pair(k.var2_, *single(q2), False)[0]
        return k.replace(
            nngp=nngp,
            ntk=None if not want else k.ntk * dot,
            var1_=var1,
            var2_=var2,
            mean1=self.rule.mean(q1),
            mean2=self.rule.mean(q2),
            gaussian=False,
        )

    def module(self, shape, opts):
        return M.Lambda(self.rule, repr(self))


class ABRelu(_Activation):
    """``a x`` for ``x < 0``, ``b x`` for ``x >= 0`` (closed form)."""

    def __init__(self, a: float, b: float) -> None:
        self.a = _check_float(a, "a", "ABRelu")
        self.b = _check_float(b, "b", "ABRelu")
        self.rule = ABReluRule(self.a, self.b)

    def __repr__(self) -> str:
        return f"ABRelu({self.a}, {self.b})"


class Relu(ABRelu):
    """``max(x, 0)`` (the arc-cosine kernel of degree 1)."""

    def __init__(self) -> None:
        super().__init__(0.0, 1.0)

    def __repr__(self) -> str:
        return "Relu()"


class LeakyRelu(ABRelu):
    """``x`` for ``x >= 0``, ``alpha x`` otherwise."""

    def __init__(self, alpha: float) -> None:
        super().__init__(_check_float(alpha, "alpha", "LeakyRelu"), 1.0)

    def __repr__(self) -> str:
        return f"LeakyRelu({self.a})"


class Abs(ABRelu):
    """``|x|``."""

    def __init__(self) -> None:
        super().__init__(-1.0, 1.0)

    def __repr__(self) -> str:
        return "Abs()"


class Erf(_Activation):
    """``a erf(b x) + c`` (closed form)."""

    def __init__(self, a: float = 1.0, b: float = 1.0, c: float = 0.0) -> None:
        self.a = _check_float(a, "a", "Erf")
        self.b = _check_float(b, "b", "Erf")
        self.c = _check_float(c, "c", "Erf")
        self.rule = ErfRule(self.a, self.b, self.c)

    def __repr__(self) -> str:
        return f"Erf({self.a}, {self.b}, {self.c})"


class Gelu(_Activation):
    """``x Phi(x)`` (closed form). ``approximate`` only changes the finite network (tanh
    approximation), as in neural-tangents."""

    def __init__(self, approximate: bool = False) -> None:
        self.approximate = bool(approximate)
        self.rule = GeluRule(self.approximate)

    def __repr__(self) -> str:
        return f"Gelu(approximate={self.approximate})"


class Elementwise(_Activation):
    """Any elementwise torch function (``torch.tanh``, ``F.softplus``, ``torch.sigmoid``,
    ``F.silu``...) by Gauss-Hermite quadrature of ``degree`` nodes per direction; the NTK uses
    the autograd derivative of ``fn``. Accuracy: exact for polynomials of degree below
    ``2 * degree``; for smooth functions the error falls geometrically with ``degree`` (see
    docs/infinite.md for measured errors), for kinks (ReLU-like) only algebraically."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], degree: int = 32) -> None:
        if not callable(fn):
            raise TypeError(f"Elementwise: fn must be callable, got {fn!r}.")
        self.fn = fn
        self.degree = _check_int(degree, "degree", "Elementwise")
        self.rule = QuadratureRule(fn, self.degree)

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", repr(self.fn))
        return f"Elementwise({name}, degree={self.degree})"
