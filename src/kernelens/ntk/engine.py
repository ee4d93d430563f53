"""The empirical NTK and the engine entry points other packages build on."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import torch
from torch import nn

from .._memory import resolve_memory_budget, tile_size
from .._progress import progress
from .._validation import check_choice
from ._autodiff import jvp_products, jvp_rows, ntvp_products, ntvp_tiles, vjp_products
from ._model import ModelCall, check_input
from ._plan import METHODS, Method, NTKPlan, Plan, extract, make_plan, probe_structure
from ._probe import Observation
from .factors import OUTPUT_MODES, DenseBlock, Factors, OuterSite, Output, contract

__all__ = ["empirical_ntk", "explain", "jacobian_factors", "jvp", "vjp"]

Params = Sequence[str | nn.Parameter] | None
FactorMethod = Literal["auto", "structured", "jacobian"]
FACTOR_METHODS: tuple[str, ...] = get_args(FactorMethod)
Weights = Mapping[str, torch.Tensor] | None


def _check_pair_inputs(x1: torch.Tensor, x2: torch.Tensor | None) -> None:
    if x2 is None:
        return
    if x1.device != x2.device:
        raise ValueError(
            f"x1 is on {x1.device} but x2 is on {x2.device}; move them to one device "
            "(e.g. x2.to(x1.device))."
        )
    if x1.dtype != x2.dtype:
        raise TypeError(
            f"x1 has dtype {x1.dtype} but x2 has dtype {x2.dtype}; cast one of them "
            "(e.g. x2.to(x1.dtype))."
        )
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(
            f"x1 examples have shape {tuple(x1.shape[1:])} but x2 examples have shape "
            f"{tuple(x2.shape[1:])}; both must be inputs the model accepts."
        )


def _check_inputs(x1, x2) -> tuple[torch.Tensor, torch.Tensor | None]:
    x1 = check_input(x1, "x1", finite=False)
    x2 = None if x2 is None else check_input(x2, "x2", finite=False)
    _check_pair_inputs(x1, x2)
    check_input(x1, "x1")
    if x2 is not None:
        check_input(x2, "x2")
    return x1, x2


def _check_cotangents(c: torch.Tensor | None, n: int, o: int, call: ModelCall) -> torch.Tensor:
    if c is None:
        return None
    if not isinstance(c, torch.Tensor):
        raise TypeError(f"cotangents must be a tensor [N, O] or [N, O, R], got {type(c).__name__}.")
    if c.ndim == 2:
        c = c[:, :, None]
    if c.ndim != 3 or c.shape[0] != n or c.shape[1] != o:
        raise ValueError(
            f"cotangents must be [N, O] or [N, O, R] with N = {n} examples and O = {o} model "
            f"outputs, got shape {tuple(c.shape)}."
        )
    if c.shape[2] == 0:
        raise ValueError("cotangents has R = 0 columns; give at least one.")
    return c.to(dtype=call.dtype, device=call.device)


class _Gather:
    """Factors of consecutive chunks of examples written into buffers for all ``n`` examples
    (allocated at the first chunk), so that the chunks never exist twice."""

    def __init__(self, n: int) -> None:
        self.n, self.start, self.out = n, 0, None

    def add(self, f: Factors) -> None:
        if self.out is None:
            if f.n == self.n:
                self.out = f
                return

            def full(t: torch.Tensor) -> torch.Tensor:
                return t.new_empty(self.n, *t.shape[1:])

            sites = [
                OuterSite(**{**s.__dict__, "cot": full(s.cot), "inp": full(s.inp)}) for s in f.sites
            ]
            blocks = [DenseBlock(b.names, b.shapes, full(b.J)) for b in f.blocks]
            self.out = Factors(f.names, f.shapes, sites, blocks, full(f.outputs), self.n, f.r)
        rows = slice(self.start, self.start + f.n)
        for mine, s in zip(self.out.sites, f.sites):
            mine.cot[rows] = s.cot
            mine.inp[rows] = s.inp
        for mine, b in zip(self.out.blocks, f.blocks):
            mine.J[rows] = b.J
        self.out.outputs[rows] = f.outputs
        self.start += f.n


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(s, min(n, s + size)) for s in range(0, n, size)]


def _extract_all(plan: Plan, x: torch.Tensor, cot, budget: float, where: str, desc: str) -> Factors:
    """Factors of all of ``x``; the chunks' extraction fits ``budget`` (the result is the
    caller's: it is not counted)."""
    size = tile_size(x.shape[0], int(plan.extract_bytes) + 1, budget)
    gather = _Gather(x.shape[0])
    for c in progress(_chunks(x.shape[0], size), desc=desc):
        gather.add(extract(plan, x[c], None if cot is None else cot[c], where=where))
    return gather.out


def jacobian_factors(
    model: nn.Module,
    x: torch.Tensor,
    *,
    weights: Weights = None,
    params: Params = None,
    cotangents: torch.Tensor | None = None,
    method: FactorMethod = "auto",
    memory_budget: int | float | None = None,
) -> Factors:
    """Factors of the per-example gradients ``g[i, r] = sum_a c[i, a, r] d f_a(x_i)/d theta``.

    Args:
        model: an ``nn.Module`` mapping ``x [N, ...]`` to ``[N, O]`` (or ``[N]``).
        x: inputs ``[N, ...]`` (float, or integer token ids).
        weights: parameter values to use instead of the module's (name -> tensor, partial).
        params: parameters to differentiate (names or Parameters); default all trainable.
        cotangents: ``[N, O]`` (R = 1) or ``[N, O, R]``; None means the identity (R = O).
        method: ``"auto"``, ``"structured"`` or ``"jacobian"`` (explicit per-example rows).
        memory_budget: bytes for the working set (default: 2 GiB, or $KERNELENS_MEMORY_BUDGET).

    Returns:
        :class:`~kernelens.ntk.Factors` with ``n = N``, ``r = R``.
    """
    check_choice(method, "method", FACTOR_METHODS)
    call = ModelCall(model, params=params, weights=weights)
    x = check_input(x, "x")
    budget = resolve_memory_budget(memory_budget)
    st = probe_structure(call, x, None, method=method, where="x")
    cot = _check_cotangents(cotangents, x.shape[0], st.outputs, call)
    r = st.outputs if cot is None else cot.shape[2]
    plan = make_plan(
        call,
        x,
        None,
        method=method,
        output="full",
        memory_budget=budget,
        r=r,
        where="x",
        structure=st,
    )
    return _extract_all(plan, x, cot, budget, "x", "NTK factors")


def explain(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    method: Method = "auto",
    output: Output = "full",
    params: Params = None,
    memory_budget: int | float | None = None,
    weights: Weights = None,
) -> NTKPlan:
    """The plan :func:`empirical_ntk` would follow: per parameter group the method and form,
    estimated FLOPs and memory. ``print(explain(model, x))`` shows it as a table."""
    check_choice(method, "method", METHODS)
    check_choice(output, "output", OUTPUT_MODES)
    call = ModelCall(model, params=params, weights=weights)
    x1, x2 = _check_inputs(x1, x2)
    plan = make_plan(call, x1, x2, method=method, output=output, memory_budget=memory_budget)
    return plan.info


def _result_shape(output: str, n1: int, n2: int, o: int) -> tuple[int, ...]:
    return {"full": (n1, n2, o, o), "diagonal": (n1, n2, o), "trace": (n1, n2)}[output]


def _tile_to_result(tile: torch.Tensor, output: str) -> torch.Tensor:
    return tile.permute(0, 2, 1, 3) if output == "full" else tile


def _mirror(tile: torch.Tensor, output: str) -> torch.Tensor:
    if output == "full":
        return tile.permute(1, 0, 3, 2)
    if output == "diagonal":
        return tile.transpose(0, 1)
    return tile.T


def empirical_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    method: Method = "auto",
    output: Output = "full",
    params: Params = None,
    memory_budget: int | float | None = None,
    weights: Weights = None,
    client: Any = None,
) -> torch.Tensor:
    """The empirical neural tangent kernel of ``model`` between ``x1`` and ``x2``.

    ``Theta[i, j, a, b] = <d f_a(x1_i)/d theta, d f_b(x2_j)/d theta>`` summed over the selected
    parameters, at the module's current parameter values (or ``weights``).

    Args:
        model: ``nn.Module`` mapping a batch ``[N, ...]`` to ``[N, O]``; ``[N]`` means O = 1 and
            ``[N, d1, d2, ...]`` is flattened in C order to O = d1 * d2 * .... It must treat
            examples independently and be deterministic (BatchNorm in eval mode, no active
            dropout); every call probes this (see Raises). Dict or tuple outputs: wrap the
            model with :func:`~kernelens.ntk.select_output`.
        x1: inputs ``[N1, ...]`` (float, or integer token ids).
        x2: inputs ``[N2, ...]``; None means x1 (only one triangle is computed).
        method: ``"auto"`` (per layer by a FLOP/memory estimate), ``"structured"`` (per-layer
            Kronecker factors), ``"jacobian"`` (per-example Jacobians, torch.func) or
            ``"ntvp"`` (NTK-vector products). See :func:`explain`.
        output: ``"full"`` -> ``[N1, N2, O, O]``; ``"diagonal"`` -> ``[N1, N2, O]`` (a = b);
            ``"trace"`` -> ``[N1, N2]`` (sum over a = b).
        params: parameters to differentiate (names or Parameter objects); default all
            parameters with ``requires_grad``.
        memory_budget: bytes for the working set (default: 2 GiB, or $KERNELENS_MEMORY_BUDGET); the
            result itself is not counted.
        weights: parameter values to use instead of the module's (name -> tensor, partial).
        client: a :class:`distributed.Client`: the kernel's example blocks are computed on its
            workers (:func:`kernelens.distributed.distributed_empirical_ntk`; the model and the
            inputs are checked here first, and ``memory_budget`` applies per worker). None
            computes in-process.

    Returns:
        The kernel in the dtype and device of the model's parameters.

    Raises:
        BatchCouplingError: ``f(x[:1])`` differs from ``f(x[:2])[:1]`` beyond round-off.
        RandomForwardError: two forwards of the same inputs differ.
    """
    check_choice(method, "method", METHODS)
    check_choice(output, "output", OUTPUT_MODES)
    call = ModelCall(model, params=params, weights=weights)
    x1, x2 = _check_inputs(x1, x2)
    budget = resolve_memory_budget(memory_budget)
    plan = make_plan(call, x1, x2, method=method, output=output, memory_budget=budget)
    if client is not None:
        from ..distributed import distributed_empirical_ntk

        return distributed_empirical_ntk(
            model,
            x1,
            x2,
            client=client,
            outputs=plan.outputs,
            method=method,
            output=output,
            params=params,
            weights=weights,
            memory_budget=budget,
        )
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    result = torch.zeros(
        _result_shape(output, n1, n2, plan.outputs), dtype=call.dtype, device=call.device
    )
    if plan.handlers or (plan.fallback and plan.fallback_form == "per-example"):
        _factor_ntk(plan, x1, x2, output, budget, result)
    if plan.fallback and plan.fallback_form == "ntvp":
        _ntvp_ntk(call, x1, x2, output, plan.fallback, budget, plan.observation, result)
    return result


def _factor_ntk(plan, x1, x2, output, budget, result) -> None:
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    keep, e, q = plan.example_bytes, plan.extract_bytes, plan.pair_bytes
    sym = x2 is None
    kept = (n1 + (0 if sym else n2)) * keep
    if kept + e <= budget / 2:  # keep every factor; extract within the rest of that half
        f1 = _extract_all(plan, x1, None, budget / 2 - kept, "x1", "NTK factors x1")
        f2 = f1 if sym else _extract_all(plan, x2, None, budget / 2 - kept, "x2", "NTK factors x2")
        b = max(1, int(math.sqrt(budget / 2 / q)))
        rows1, rows2 = _chunks(n1, b), _chunks(n2, b)

        def get1(c):
            return f1.rows(c)

        def get2(c):
            return f2.rows(c)

    else:  # per tile: the kept rows of x1, one extraction of x2's rows, the tile
        b = max(1, int((-2 * e + math.sqrt(4 * e * e + 4 * q * budget)) / (2 * q)))
        rows1, rows2 = _chunks(n1, b), _chunks(n2, b)
        xx2 = x1 if sym else x2

        def get1(c):
            return extract(plan, x1[c], None, where="x1")

        def get2(c):
            return extract(plan, xx2[c], None, where="x2")

    pairs = [(i, j) for i in range(len(rows1)) for j in range(len(rows2)) if not sym or j >= i]
    cache: dict[int, Factors] = {}
    for i, j in progress(pairs, desc="NTK tiles"):
        if i not in cache:
            cache.clear()
            cache[i] = get1(rows1[i])
        fa = cache[i]
        fb = fa if (sym and i == j) else get2(rows2[j])
        tile = _tile_to_result(contract(fa, fb, output=output), output)
        result[rows1[i], rows2[j]] += tile
        if sym and j != i:
            result[rows2[j], rows1[i]] += _mirror(tile, output)


def _ntvp_ntk(
    call: ModelCall,
    x1: torch.Tensor,
    x2: torch.Tensor | None,
    output: str,
    names: Sequence[str],
    budget: int,
    obs: Observation,
    out: torch.Tensor,
) -> None:
    """Add the NTK block of ``names`` to ``out`` by NTK-vector products: for each column (j, b),
    ``J1 (J2^T e_jb)``, vmapped over blocks of columns; the vjp runs on the examples of x2
    the block's columns belong to, the jvp on tiles of x1 (:func:`ntvp_tiles`)."""
    xx2 = x1 if x2 is None else x2
    n1, n2, o = x1.shape[0], xx2.shape[0], obs.outputs
    p = sum(math.prod(call.shapes[n]) for n in names)
    tiles = ntvp_tiles(call, p, obs, budget, columns=n2 * o, n_in=n2, n_out=n1)
    for c in progress(_chunks(n2 * o, tiles.columns), desc="NTK-vector products"):
        idx = torch.arange(c.start, c.stop, device=call.device)
        j0, j1 = c.start // o, (c.stop - 1) // o + 1  # the examples of x2 these columns cover
        js, bs, cols = idx // o, idx % o, torch.arange(idx.numel(), device=call.device)
        basis = torch.zeros(idx.numel(), j1 - j0, o, dtype=call.dtype, device=call.device)
        basis[cols, js - j0, bs] = 1
        tangents = ntvp_products(call, xx2[j0:j1], basis, tiles, names=names, where_in="x2")
        del basis
        for rows, jv in jvp_rows(call, x1, tangents, tiles, where_out="x1"):  # [k, r, O]
            if output == "full":
                out[rows, js, :, bs] += jv  # advanced indices apart: the view is [k, r, O]
            elif output == "diagonal":
                out[rows, js, bs] += jv[cols, :, bs].T
            else:
                out[rows].index_add_(1, js, jv[cols, :, bs].T)


def vjp(
    model: nn.Module,
    x: torch.Tensor,
    cotangents: torch.Tensor,
    *,
    weights: Weights = None,
    params: Params = None,
) -> dict[str, torch.Tensor]:
    """``J^T c`` summed over the batch: ``{name: [*shape]}`` for ``cotangents [N, O]``, or
    ``{name: [K, *shape]}`` for ``[N, O, K]`` (one backward pass, vmapped over K)."""
    call = ModelCall(model, params=params, weights=weights)
    x = check_input(x, "x")

    def columns(y: torch.Tensor) -> torch.Tensor:
        c = _check_cotangents(cotangents, x.shape[0], y.shape[1], call)
        return c.permute(2, 0, 1)

    _, out = vjp_products(call, x, columns, where="x")
    if cotangents.ndim == 2:
        return {n: v[0] for n, v in out.items()}
    return out


def jvp(
    model: nn.Module,
    x: torch.Tensor,
    tangents: Mapping[str, torch.Tensor],
    *,
    weights: Weights = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f(x) [N, O], J t [N, O])`` for a parameter tangent ``t = {name: [*shape]}`` (names
    not given have zero tangent); forward-mode AD, one pass. ``J`` is the Jacobian whose
    transpose autograd's backward computes (:func:`vjp`): an Embedding's ``padding_idx`` row
    gets no tangent through that Embedding's lookup, but does wherever the same (tied)
    weight is used elsewhere."""
    if not isinstance(tangents, Mapping) or not tangents:
        raise TypeError("tangents must be a non-empty mapping {parameter name: tensor}.")
    call = ModelCall(model, params=list(tangents), weights=weights)
    x = check_input(x, "x")
    for n, t in tangents.items():
        if tuple(t.shape) != tuple(call.shapes[n]):
            raise ValueError(
                f"tangents[{n!r}] has shape {tuple(t.shape)}, expected the parameter's shape "
                f"{tuple(call.shapes[n])}."
            )
    return jvp_products(call, x, tangents, where="x")
