"""Plain automatic differentiation on a :class:`ModelCall`: per-example gradients (torch.func
vmap, with a per-example loop where vmap has no batching rule, e.g. nn.GRU / nn.LSTM),
vector-Jacobian and Jacobian-vector products."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import jvp as func_jvp
from torch.func import vjp as func_vjp
from torch.func import vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from .._memory import element_size
from .._progress import progress
from ._model import ModelCall
from ._probe import Observation

__all__ = [
    "ACTIVATION_LIVE",
    "NTVPTiles",
    "batched_grad",
    "jvp_products",
    "jvp_rows",
    "ntvp_products",
    "ntvp_tiles",
    "padding_rows_as_autograd",
    "per_example_grads",
    "vjp_products",
]

_TRANSFORM_ERRORS = (RuntimeError, NotImplementedError, ValueError)
#: Tensors of the size of the forward's largest allocation live at once per example and
#: column in a vmapped backward or jvp (an op's input, output, their cotangents/tangents and
#: the allocator's slack), measured on MLPs by tests/ntk/test_memory.py.
ACTIVATION_LIVE = 10


def _is_unsupported(exc: BaseException) -> bool:
    """Whether ``exc`` says a torch.func transform or forward AD does not support an op."""
    text = str(exc)
    keys = ("Batching rule", "vmap", "functorch", "forward AD", "forward-mode", "not implemented")
    return any(k in text for k in keys)


def batched_grad(
    y: torch.Tensor,
    inputs: Sequence[torch.Tensor],
    grad_outputs: torch.Tensor,
    *,
    retain_graph: bool = False,
) -> list[torch.Tensor | None]:
    """``d <g_k, y> / d inputs`` for every ``g_k`` in ``grad_outputs [K, *y.shape]``; each result
    is ``[K, *input.shape]`` (None where an input does not affect ``y``). One vmapped backward
    where possible, else a loop of K backward passes."""
    if not y.requires_grad:  # y does not depend on any input
        return [None] * len(inputs)
    if grad_outputs.shape[0] == 1:  # one column: a plain backward, no vmap machinery
        grads = torch.autograd.grad(
            y, inputs, grad_outputs[0], allow_unused=True, retain_graph=retain_graph
        )
        return [None if g is None else g[None] for g in grads]
    try:
        return list(
            torch.autograd.grad(
                y,
                inputs,
                grad_outputs,
                is_grads_batched=True,
                allow_unused=True,
                retain_graph=True,
            )
        )
    except RuntimeError:  # no batching rule for some backward op: loop over the K columns
        pass
    k = grad_outputs.shape[0]
    cols: list[list[torch.Tensor | None]] = []
    for i in range(k):
        cols.append(
            list(
                torch.autograd.grad(
                    y,
                    inputs,
                    grad_outputs[i],
                    allow_unused=True,
                    retain_graph=retain_graph or i < k - 1,
                )
            )
        )
    out: list[torch.Tensor | None] = []
    for j in range(len(inputs)):
        col = [c[j] for c in cols]
        out.append(None if col[0] is None else torch.stack(col))
    return out


def _flat(grads: Mapping[str, torch.Tensor], names: Sequence[str], lead: int) -> torch.Tensor:
    return torch.cat([grads[n].reshape(*grads[n].shape[:lead], -1) for n in names], dim=-1)


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Context using the plain (decomposed) attention kernel and no fused
    MultiheadAttention fast path: those have forward-mode and batching rules, the fused CPU
    kernels have neither."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def per_example_grads(
    call: ModelCall,
    names: Sequence[str],
    x: torch.Tensor,
    cot: torch.Tensor | None,
    *,
    where: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit per-example gradients of the parameters ``names``.

    Args:
        call: the model call (values and overrides).
        names: parameters to differentiate (a subset of ``call.names``).
        x: inputs ``[N, ...]``.
        cot: cotangents ``[N, O, R]``, or None for the identity (R = O).

    Returns:
        ``(f(x) [N, O], J [N, R, p])`` with p the total size of ``names`` (in that order).
    """
    try:
        with math_attention():
            return _per_example_vmap(call, names, x, cot, where)
    except Exception:  # vmap fails in op-specific ways; the loop is exact
        # and re-raises any genuine model error with the model's own message
        return _per_example_loop(call, names, x, cot, where)


def _per_example_vmap(call, names, x, cot, where):
    base = call.values
    primals = {n: base[n] for n in names}

    def single(xi: torch.Tensor, ci: torch.Tensor | None):
        def f(sub: dict[str, torch.Tensor]) -> torch.Tensor:
            vals = dict(base)
            vals.update(sub)
            return call(xi[None], vals, where=where)[0]

        out, vjp_fn = func_vjp(f, primals)
        basis = torch.eye(out.shape[0], dtype=out.dtype, device=out.device) if ci is None else ci.T
        (g,) = vmap(vjp_fn)(basis)
        return out, _flat(g, names, 1)

    if cot is None:
        return vmap(lambda xi: single(xi, None))(x)
    return vmap(single)(x, cot)


def _per_example_loop(call, names, x, cot, where):
    outs, js = [], []
    for i in progress(range(x.shape[0]), desc="per-example gradients"):
        vals = dict(call.values)
        leaves = [vals[n].detach().requires_grad_(True) for n in names]
        vals.update(zip(names, leaves))
        with torch.enable_grad():
            y = call(x[i : i + 1], vals, where=where)
            o = y.shape[1]
            basis = (
                torch.eye(o, dtype=y.dtype, device=y.device)
                if cot is None
                else cot[i].T.to(y.dtype)
            )
            grads = batched_grad(y, leaves, basis[:, None, :])
        grads = {
            n: g if g is not None else p.new_zeros(basis.shape[0], *p.shape)
            for n, g, p in zip(names, grads, leaves)
        }
        js.append(_flat(grads, names, 1))
        outs.append(y.detach()[0])
    return torch.stack(outs), torch.stack(js)


def vjp_products(
    call: ModelCall,
    x: torch.Tensor,
    cot: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
    *,
    values: Mapping[str, torch.Tensor] | None = None,
    names: Sequence[str] | None = None,
    where: str,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``J^T c`` summed over the batch, for ``cot [K, N, O]``: ``(f(x) [N, O],
    {name: [K, *shape]})`` for the parameters ``names`` (default all selected; one vmapped
    backward pass). ``cot`` may be a function of ``f(x)`` returning the cotangents (to check
    them against the output without a second forward)."""
    vals = dict(call.values if values is None else values)
    names = call.names if names is None else names
    leaves = {n: vals[n].detach().requires_grad_(True) for n in names}
    vals.update(leaves)
    with torch.enable_grad():
        y = call(x, vals, where=where)
        c = cot(y.detach()) if callable(cot) else cot
        grads = batched_grad(y, list(leaves.values()), c.to(y.dtype))
    out = {}
    for (name, leaf), g in zip(leaves.items(), grads):
        out[name] = g if g is not None else leaf.new_zeros(c.shape[0], *leaf.shape)
    return y.detach(), out


def jvp_products(
    call: ModelCall,
    x: torch.Tensor,
    tangents: Mapping[str, torch.Tensor],
    *,
    values: Mapping[str, torch.Tensor] | None = None,
    where: str,
    batched: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f(x) [N, O], J t [N, O])`` for parameter tangents ``t`` (names of ``call.names``).

    With ``batched``, every tangent has a leading axis K and the result is ``[K, N, O]``.
    Uses forward-mode AD (torch.func.jvp, vmapped over K); where an op has no forward-mode
    or batching rule, falls back to a loop and to the transpose of a reverse-mode product.
    """
    base = dict(call.values if values is None else values)
    names = [n for n in call.names if n in tangents]
    primals = {n: base[n] for n in names}

    def f(sub: dict[str, torch.Tensor]) -> torch.Tensor:
        vals = dict(base)
        vals.update(sub)
        return call(x, vals, where=where)

    def single(t: dict[str, torch.Tensor]) -> torch.Tensor:
        return _jvp_one(f, primals, t)

    tan = {n: tangents[n].to(base[n].dtype) for n in names}
    with math_attention(), padding_rows_as_autograd(call.model):
        return _jvp_dispatch(f, single, primals, tan, batched)


@contextlib.contextmanager
def padding_rows_as_autograd(model: nn.Module) -> Iterator[None]:
    """Make forward mode treat every ``Embedding(padding_idx=...)`` as autograd's backward
    does: the lookup of a padding token carries no tangent (its row gets no gradient from
    that layer), while the same weight used elsewhere (an output head tied to it) keeps its
    full tangent. The primal values are unchanged."""

    def hook(mod: nn.Embedding, args: tuple, out: torch.Tensor) -> torch.Tensor:
        keep = (args[0] != mod.padding_idx).unsqueeze(-1)
        return torch.where(keep, out, out.detach())

    hooks = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Embedding) and m.padding_idx is not None
    ]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


@dataclass(frozen=True)
class NTVPTiles:
    """Tile sizes of NTK-vector products ``J_out (J_in^T V)`` within a memory budget.

    Attributes:
        columns: columns of ``V`` per block (vmapped together).
        rows_in: examples of ``x_in`` per vjp (the tangents are summed over blocks).
        rows_out: examples of ``x_out`` per jvp.
    """

    columns: int
    rows_in: int
    rows_out: int


def ntvp_tiles(
    call: ModelCall, p: int, obs: Observation, budget: float, *, columns: int, n_in: int, n_out: int
) -> NTVPTiles:
    """Tile sizes so that one block of NTK-vector products fits ``budget`` bytes.

    A block of ``k`` columns holds its parameter tangents (``3 p`` numbers a column with
    autograd's buffers); a vjp over ``r`` examples holds their saved activations (at most
    all that one example's forward allocates) and ``k`` activation cotangents per example;
    a jvp over ``r`` examples holds ``k`` tangents of the live activations per example and its
    ``[k, r, O]`` output. Live activations per example and column:
    ``max(ACTIVATION_LIVE * largest allocation, 2 * all allocations)`` of the probe forward."""
    es = element_size(call.dtype)
    act = max(ACTIVATION_LIVE * obs.largest_bytes, 2 * obs.example_bytes)
    o = obs.outputs
    col = 3 * es * p
    k = int(max(1, min(columns, (budget / 2) // (col + act + 2 * es * o))))
    rest = max(budget - k * col, budget / 2)
    row_in = obs.example_bytes + k * (act + es * o)
    row_out = act + k * (act + es * o)
    rows_in = int(max(1, min(n_in, rest // row_in)))
    rows_out = int(max(1, min(n_out, rest // row_out)))
    return NTVPTiles(k, rows_in, rows_out)


def ntvp_products(
    call: ModelCall,
    x_in: torch.Tensor,
    V: torch.Tensor,
    tiles: NTVPTiles,
    *,
    names: Sequence[str] | None = None,
    where_in: str,
) -> dict[str, torch.Tensor]:
    """``J_in^T V`` for ``V [K, N_in, O]`` (``K <= tiles.columns``): parameter tangents
    ``{name: [K, *shape]}``, summed over vjps of ``tiles.rows_in`` examples."""
    total: dict[str, torch.Tensor] | None = None
    for s in range(0, x_in.shape[0], tiles.rows_in):
        rows = slice(s, s + tiles.rows_in)
        _, t = vjp_products(call, x_in[rows], V[:, rows], names=names, where=where_in)
        if total is None:
            total = t
        else:
            for n, v in t.items():
                total[n] += v
    assert total is not None
    return total


def jvp_rows(
    call: ModelCall,
    x_out: torch.Tensor,
    tangents: Mapping[str, torch.Tensor],
    tiles: NTVPTiles,
    *,
    where_out: str,
):
    """``(rows, J_out[rows] t [K, r, O])`` for each block of ``tiles.rows_out`` examples."""
    for s in range(0, x_out.shape[0], tiles.rows_out):
        rows = slice(s, s + tiles.rows_out)
        yield rows, jvp_products(call, x_out[rows], tangents, where=where_out, batched=True)[1]


def _jvp_dispatch(f, single, primals, tan, batched):
    if not batched:
        y, jv = _jvp_one(f, primals, tan, with_value=True)
        return y, jv
    with torch.no_grad():
        y = f(primals)
    try:
        return y, vmap(lambda t: func_jvp(f, (primals,), (t,))[1])(tan)
    except _TRANSFORM_ERRORS as exc:
        if not _is_unsupported(exc):
            raise
    k = next(iter(tan.values())).shape[0]
    return y, torch.stack([single({n: v[i] for n, v in tan.items()}) for i in range(k)])


def _jvp_one(
    f: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    primals: dict[str, torch.Tensor],
    tangent: dict[str, torch.Tensor],
    *,
    with_value: bool = False,
):
    try:
        y, jv = func_jvp(f, (primals,), (tangent,))
    except _TRANSFORM_ERRORS as exc:
        if not _is_unsupported(exc):
            raise
        y, jv = _jvp_by_double_backward(f, primals, tangent)
    return (y.detach(), jv.detach()) if with_value else jv.detach()


def _jvp_by_double_backward(f, primals, tangent):
    """``J t`` as ``d/du <J^T u, t>`` (reverse mode twice), for ops without forward-mode AD."""
    leaves = {n: v.detach().requires_grad_(True) for n, v in primals.items()}
    with torch.enable_grad():
        y = f(leaves)
        u = torch.zeros_like(y, requires_grad=True)
        g = torch.autograd.grad(y, list(leaves.values()), u, create_graph=True, allow_unused=True)
        s = sum((gi * tangent[n]).sum() for (n, _), gi in zip(leaves.items(), g) if gi is not None)
        (jv,) = torch.autograd.grad(s, u, allow_unused=True)
    return y.detach(), (jv if jv is not None else torch.zeros_like(y)).detach()
