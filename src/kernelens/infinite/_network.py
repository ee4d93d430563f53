"""Evaluating a description: the tiled analytic kernel and the Monte Carlo estimate from built
networks."""

from __future__ import annotations

import collections
import math

import torch

from .._memory import element_size, resolve_memory_budget
from .._progress import progress
from .._validation import as_tensor
from ._state import KernelState, input_state

__all__ = ["KERNEL_NAMES", "monte_carlo_kernel", "network_kernel"]

KERNEL_NAMES = ("nngp", "ntk")
#: working copies of a pair tile alive at once in one stream (nngp, ntk, the layer's output and
#: temporaries such as padded copies and broadcast products); measured peak / tile size on the
#: benchmark CNNs stays below this (benchmarks/infinite.py)
_COPIES_PER_STREAM = 8
_QUADRATURE_COPIES = 2  # x degree: the inner Gauss-Hermite sum is vectorised over one axis

_TYPES: dict[tuple[str, ...], type] = {}


def _kernels_type(names: tuple[str, ...]) -> type:
    if names not in _TYPES:
        _TYPES[names] = collections.namedtuple("Kernels", names)
    return _TYPES[names]


def _parse_get(get) -> tuple[tuple[str, ...], bool]:
    single = isinstance(get, str)
    names = (get,) if single else tuple(get) if get is not None else ()
    bad = [g for g in names if g not in KERNEL_NAMES]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(
            f"get must be 'nngp', 'ntk' or a tuple of distinct names from {KERNEL_NAMES}, got "
            f"{get!r}."
        )
    return names, single


def _check_x(net, x1, x2):
    x1 = as_tensor(x1, "x1")
    if x1.ndim not in (2, 3, 4):
        raise ValueError(
            f"x1 must be [N, d] features or NCHW images [N, C, H, W] / [N, C, L], got shape "
            f"{tuple(x1.shape)}."
        )
    if x2 is not None:
        x2 = as_tensor(x2, "x2", dtype=x1.dtype)
        if x2.shape[1:] != x1.shape[1:]:
            raise ValueError(
                f"x2 must have the per-example shape of x1 {tuple(x1.shape[1:])}, got "
                f"{tuple(x2.shape[1:])}."
            )
    shape = tuple(x1.shape[1:])
    out = net.out_shape(shape)
    if isinstance(out, list):
        raise ValueError(
            f"the network ends with {len(out)} streams; join them with FanInSum() or "
            "FanInConcat() so that it has one output."
        )
    if len(out) != 1:
        raise ValueError(
            f"the network's output [N, *{out}] keeps spatial axes; end it with Flatten() or "
            "GlobalAvgPool() (then a Dense readout) to get one kernel value per pair."
        )
    return x1, x2


def _same_inputs(x1: torch.Tensor, x2: torch.Tensor | None) -> bool:
    """neural-tangents' ``x1_is_x2``: no x2, the same tensor, or equal to within 1e-12."""
    if x2 is None or x2 is x1:
        return True
    return x1.shape == x2.shape and bool(torch.all((x1 - x2).abs() < 1e-12))


def _pair_bytes(net, x1: torch.Tensor, diagonal: bool) -> int:
    spatial = math.prod(x1.shape[2:])
    per_pair = spatial if diagonal else spatial * spatial
    streams = 1 + sum(getattr(layer, "num", 1) - 1 for layer in net._leaves())
    degree = max((getattr(layer, "degree", 0) for layer in net._leaves()), default=0)
    copies = _COPIES_PER_STREAM * streams + _QUADRATURE_COPIES * degree
    return per_pair * copies * element_size(x1.dtype)


def network_kernel(net, x1, x2=None, get=("nngp", "ntk"), *, memory_budget=None):
    """The infinite-width NNGP and/or NTK of ``net`` between ``x1`` and ``x2``.

    Args:
        net: a layer or a composition (``serial``...).
        x1: inputs ``[N1, d]`` or NCHW ``[N1, C, H, W]`` / ``[N1, C, L]``.
        x2: inputs ``[N2, ...]``; None means x1 (only one triangle of tiles is computed).
        get: ``"nngp"``, ``"ntk"`` (one tensor) or a tuple of them (a namedtuple ``Kernels``
            with those fields, in that order).
        memory_budget: bytes for the working set of one tile of example pairs (default 2 GiB
            or $KERNELENS_MEMORY_BUDGET); the result ``[N1, N2]`` is not counted.

    Returns:
        ``[N1, N2]`` tensor(s) in the dtype of ``x1``.
    """
    names, single = _parse_get(get)
    x1, x2 = _check_x(net, x1, x2)
    same = _same_inputs(x1, x2)
    if same:
        x2 = None
    want_ntk = "ntk" in names
    diagonal = not net.needs_full
    budget = resolve_memory_budget(memory_budget)
    per_pair = _pair_bytes(net, x1, diagonal)
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    rows = max(1, math.isqrt(max(1, budget // per_pair)))
    rows1, rows2 = min(rows, n1), min(rows, n2)
    if rows1 * rows2 < min(n1, rows) * min(n2, rows):  # pragma: no cover - defensive
        rows1 = rows2 = rows
    out = {name: x1.new_empty((n1, n2)) for name in names}
    tiles = [
        (i, j) for i in range(0, n1, rows1) for j in range(0, n2, rows2) if x2 is not None or j >= i
    ]
    for i, j in progress(tiles, desc="infinite-width kernel"):
        a = x1[i : i + rows1]
        if x2 is None:
            b = None if i == j else x1[j : j + rows2]
        else:
            b = x2[j : j + rows2]
        state = net.apply(input_state(a, b, diagonal=diagonal, want_ntk=want_ntk))
        _check_output(state)
        for name in names:
            block = getattr(state, name)
            out[name][i : i + a.shape[0], j : j + block.shape[1]] = block
            if x2 is None and i != j:
                out[name][j : j + block.shape[1], i : i + a.shape[0]] = block.T
    if single:
        return out[names[0]]
    return _kernels_type(names)(*(out[n] for n in names))


def _check_output(state) -> None:
    if not isinstance(state, KernelState):
        raise ValueError("the network ends with several streams; join them with FanInSum().")
    if state.nngp.ndim != 2:  # pragma: no cover - out_shape checks this first
        raise ValueError("the network's output keeps spatial axes; end it with Flatten().")


def monte_carlo_kernel(
    net, x1, x2=None, n_samples: int = 16, *, get=("nngp", "ntk"), seed: int = 0,
    dtype=None, memory_budget=None,
):  # fmt: skip
    """Average of the empirical kernels of ``n_samples`` finite networks ``net.build(...)``
    (seeds ``seed, seed + 1, ...``): NNGP ``f(x1) f(x2)^T / O`` and NTK
    ``empirical_ntk(model, x1, x2, output="trace") / O``.

    With train-mode ``Dropout`` the masks are fixed per example index, so distinct inputs must
    sit at distinct indices: ``x1`` and ``x2`` are evaluated as one batch ``[x1; x2]``.

    Returns:
        The same form as :meth:`Layer.kernel`: a tensor for one name, else a namedtuple.
    """
    from ..ntk import empirical_ntk

    names, single = _parse_get(get)
    x1, x2 = _check_x(net, x1, x2)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
    if _same_inputs(x1, x2):
        x2 = None
    dtype = x1.dtype if dtype is None else dtype
    xs = x1 if x2 is None else torch.cat([x1, x2])
    n1 = x1.shape[0]
    sums = {name: torch.zeros((n1, xs.shape[0] - n1 if x2 is not None else n1), dtype=dtype)
            for name in names}  # fmt: skip
    for s in progress(range(n_samples), desc="Monte Carlo kernel"):
        model = net.build(tuple(x1.shape[1:]), seed=seed + s, dtype=dtype)
        xin = xs.to(dtype)
        cols = slice(n1, None) if x2 is not None else slice(0, n1)
        if "nngp" in names:
            with torch.no_grad():
                f = model(xin).reshape(xin.shape[0], -1)
            sums["nngp"] += (f[:n1] @ f[cols].T) / f.shape[1]
        if "ntk" in names:
            theta = empirical_ntk(model, xin, output="trace", memory_budget=memory_budget)
            o = model(xin[:1]).reshape(1, -1).shape[1]
            sums["ntk"] += theta[:n1, cols] / o
    out = {name: v / n_samples for name, v in sums.items()}
    if single:
        return out[names[0]]
    return _kernels_type(names)(*(out[n] for n in names))
