"""Structured per-example gradients and their inner products.

A :class:`Factors` object holds the gradients ``g[i, r] = sum_a c[i, a, r] d f_a(x_i)/d theta``
of N examples and R cotangent columns without forming them where the layer allows:

- :class:`OuterSite`: a layer whose weight gradient is a sum over positions of outer products,
  ``dW[i, r] = sum_t delta[i, r, t] (x) a[i, t]`` (Linear, Conv as im2col, Embedding as one-hot,
  the projections of MultiheadAttention), optionally with a bias whose gradient is
  ``sum_t delta[i, r, t]`` (the "ones column" of the input).
- :class:`DenseBlock`: explicit gradients ``[N, R, p]`` of a few parameters (norm affines, layers
  whose factors would cost more than the block, and the per-example Jacobian fallback).

Inner products of two sites of the same layer use only Grams:
``<dW[i, r], dW'[j, s]> = sum_{t, t'} <delta[i, r, t], delta'[j, s, t']> <a[i, t], a'[j, t']>``,
which is the product ``<delta, delta'> <a, a'>`` when a layer has a single position.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

import torch

__all__ = ["OUTPUT_MODES", "DenseBlock", "Factors", "OuterSite", "Output", "contract", "dense_dot"]

Output = Literal["full", "diagonal", "trace"]
OUTPUT_MODES: tuple[str, ...] = get_args(Output)
Scale = float | torch.Tensor


@dataclass
class OuterSite:
    """Kronecker factors of one layer's weight (and bias) gradient for N examples.

    Attributes:
        key: identifies the layer block; only sites with equal keys are contracted together.
        weight, bias: parameter names covered (either may be None).
        w_index, b_index: index into the parameter the block covers (None = all of it).
        w_shape, b_shape: shapes of ``param[index]``.
        cot: output cotangents ``[N, R, T, G, dout]`` (T positions, G groups).
        inp: layer inputs ``[N, T, G, din]``, or for an embedding the token ids ``[N, T]``
            (int64; one-hot over ``din`` = vocabulary size, weight stored as ``[din, dout]``).
        din: input width (vocabulary size for an embedding).
        w_scale, b_scale: multipliers of the weight / bias gradients (see Factors.scale_).
    """

    key: tuple[str, ...]
    weight: str | None
    bias: str | None
    w_index: tuple[slice, ...] | None
    b_index: tuple[slice, ...] | None
    w_shape: torch.Size | None
    b_shape: torch.Size | None
    cot: torch.Tensor
    inp: torch.Tensor
    din: int
    w_scale: Scale = 1.0
    b_scale: Scale = 1.0

    @property
    def is_index(self) -> bool:
        return not self.inp.is_floating_point()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n in (self.weight, self.bias) if n is not None)

    def rows(self, index: slice | torch.Tensor) -> OuterSite:
        return replace(self, cot=self.cot[index], inp=self.inp[index])

    def dense_parts(self) -> dict[str, torch.Tensor]:
        """Explicit gradients of the covered region: name -> ``[N, R, *region_shape]``."""
        n, r, _, _, dout = self.cot.shape
        out: dict[str, torch.Tensor] = {}
        if self.weight is not None:
            if self.is_index:
                ids = self.inp.clamp_min(0)
                m = self.cot.new_zeros(n, r, self.din, dout)
                idx = ids[:, None, :, None].expand(n, r, ids.shape[1], dout)
                m.scatter_add_(2, idx, self.cot[:, :, :, 0, :])
            else:  # per (example, group): [(R o), T] @ [T, d], one batched product
                t, g, d = self.inp.shape[1:]
                lhs = self.cot.permute(0, 3, 1, 4, 2).reshape(n * g, r * dout, t)
                rhs = self.inp.transpose(1, 2).reshape(n * g, t, d)
                m = torch.bmm(lhs, rhs).view(n, g, r, dout, d).transpose(1, 2)
            out[self.weight] = _scaled(m, self.w_scale).reshape(n, r, *self.w_shape)
        if self.bias is not None:
            out[self.bias] = _scaled(self.cot.sum(2), self.b_scale).reshape(n, r, *self.b_shape)
        return out

    def bytes_per_example(self) -> int:
        return (self.cot[0].numel() + self.inp[0].numel()) * self.cot.element_size()


def _scaled(t: torch.Tensor, s: Scale) -> torch.Tensor:
    return t if isinstance(s, float) and s == 1.0 else t * s


@dataclass
class DenseBlock:
    """Explicit gradients ``J [N, R, p]`` of whole parameters ``names`` (concatenated in order)."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    J: torch.Tensor

    def offsets(self) -> dict[str, slice]:
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes):
            size = math.prod(shape)
            out[name] = slice(start, start + size)
            start += size
        return out

    def rows(self, index: slice | torch.Tensor) -> DenseBlock:
        return replace(self, J=self.J[index])


def _place(
    dense: dict[str, torch.Tensor],
    name: str,
    part: torch.Tensor,
    index: tuple[slice, ...] | None,
    shape: torch.Size,
    *,
    lead: int = 2,
) -> None:
    """Add ``part [*lead_axes, *region]`` into ``dense[name] [*lead_axes, *shape]`` at
    ``index`` (``lead`` leading axes, e.g. [N, R])."""
    if index is None:
        dense[name] = dense[name] + part if name in dense else part
        return
    if name not in dense:
        dense[name] = part.new_zeros(*part.shape[:lead], *shape)
    dense[name][(*(slice(None),) * lead, *index)] += part


@dataclass
class Factors:
    """Per-example gradients of N examples and R cotangent columns, kept as factors.

    Attributes:
        names: selected parameter names (model order); ``param_slices`` maps each to its slice
            of the flattened P axis used by :meth:`to_dense` and :func:`dense_dot`.
        shapes: name -> parameter shape.
        sites, blocks: the structured and explicit parts (each parameter entry is covered by
            sites and/or one block; parameters in neither have zero gradient).
        outputs: ``f(x) [N, O]`` at the weights the factors were taken at (detached).
        n, r: numbers of examples and cotangent columns.
    """

    names: tuple[str, ...]
    shapes: dict[str, torch.Size]
    sites: list[OuterSite]
    blocks: list[DenseBlock]
    outputs: torch.Tensor
    n: int
    r: int
    param_slices: dict[str, slice] = field(init=False)

    def __post_init__(self) -> None:
        start, slices = 0, {}
        for name in self.names:
            size = math.prod(self.shapes[name])
            slices[name] = slice(start, start + size)
            start += size
        self.param_slices = slices

    @property
    def num_params(self) -> int:
        return sum(math.prod(self.shapes[n]) for n in self.names)

    @property
    def dtype(self) -> torch.dtype:
        return self.outputs.dtype

    @property
    def device(self) -> torch.device:
        return self.outputs.device

    def rows(self, index: slice | torch.Tensor) -> Factors:
        """The factors of a subset of the examples (a slice or an index tensor)."""
        out = Factors(
            self.names,
            self.shapes,
            [s.rows(index) for s in self.sites],
            [b.rows(index) for b in self.blocks],
            self.outputs[index],
            0,
            self.r,
        )
        out.n = out.outputs.shape[0]
        return out

    def to_dense_dict(self) -> dict[str, torch.Tensor]:
        """Explicit gradients: name -> ``[N, R, *shape]`` (zeros where a parameter is unused);
        views of :meth:`to_dense`."""
        J = self.to_dense()
        return {
            name: J[:, :, sl].reshape(self.n, self.r, *self.shapes[name])
            for name, sl in self.param_slices.items()
        }

    def to_dense(self) -> torch.Tensor:
        """Explicit gradients ``[N, R, P]``, parameters flattened in ``param_slices`` order."""
        return _fill_dense(self, self.names, self.sites, self.blocks)

    def combine(self, V: torch.Tensor) -> dict[str, torch.Tensor]:
        """``sum_{i, r} V[k, i, r] g[i, r]`` for ``V [K, N, R]``: ``{name: [K, *shape]}``
        (the transpose of :func:`dense_dot`; no per-example gradient is formed)."""
        if V.ndim != 3 or V.shape[1:] != (self.n, self.r):
            raise ValueError(
                f"V must be [K, N, R] = [K, {self.n}, {self.r}], got shape {tuple(V.shape)}."
            )
        k = V.shape[0]
        out: dict[str, torch.Tensor] = {}
        for s in self.sites:
            w = torch.einsum("kir,irtgo->kitgo", V, s.cot)
            if s.weight is not None:
                if s.is_index:
                    m = w.new_zeros(k, s.din, w.shape[-1])
                    ids = s.inp.clamp_min(0).reshape(-1)
                    m.index_add_(1, ids, w[:, :, :, 0, :].reshape(k, -1, w.shape[-1]))
                else:
                    m = torch.einsum("kitgo,itgd->kgod", w, s.inp)
                part = (m * s.w_scale).reshape(k, *s.w_shape)
                _place(out, s.weight, part, s.w_index, self.shapes[s.weight], lead=1)
            if s.bias is not None:
                part = (w.sum((1, 2)) * s.b_scale).reshape(k, *s.b_shape)
                _place(out, s.bias, part, s.b_index, self.shapes[s.bias], lead=1)
        for b in self.blocks:
            flat = torch.einsum("kir,irp->kp", V, b.J)
            for name, sl in b.offsets().items():
                _place(
                    out,
                    name,
                    flat[:, sl].reshape(k, *self.shapes[name]),
                    None,
                    self.shapes[name],
                    lead=1,
                )
        for name in self.names:
            if name not in out:
                out[name] = V.new_zeros(k, *self.shapes[name])
        return {name: out[name] for name in self.names}

    def scale_(self, scales: Mapping[str, Scale]) -> Factors:
        """Multiply the gradient of each named parameter in place and return ``self``.

        A float or 0-d tensor keeps the structure; a tensor of the parameter's shape
        (elementwise, e.g. Adam's preconditioner) makes that layer's block explicit first.
        """
        for name, s in scales.items():
            if name not in self.shapes:
                raise KeyError(
                    f"scale_ got {name!r}, which is not one of the selected parameters "
                    f"{list(self.names)}."
                )
            elementwise = isinstance(s, torch.Tensor) and s.ndim > 0
            if elementwise and s.shape != self.shapes[name]:
                raise ValueError(
                    f"scale for {name!r} must be a number or a tensor of the parameter's shape "
                    f"{tuple(self.shapes[name])}, got shape {tuple(s.shape)}."
                )
            if elementwise:
                self.densify({name})
            for site in self.sites:
                if site.weight == name:
                    site.w_scale = site.w_scale * s
                if site.bias == name:
                    site.b_scale = site.b_scale * s
            for block in self.blocks:
                sl = block.offsets().get(name)
                if sl is not None:
                    factor = s.reshape(-1).to(block.J) if elementwise else s
                    block.J = block.J.clone()
                    block.J[:, :, sl] *= factor
        return self

    def densify(self, names: set[str] | Sequence[str]) -> Factors:
        """Replace every site touching ``names`` (and the parts sharing parameters with
        them) by one explicit :class:`DenseBlock`, in place; returns ``self``. The gradients
        are unchanged; only their representation becomes explicit."""
        touched = set(names)
        changed = True
        while changed:
            changed = False
            for part in [*self.sites, *self.blocks]:
                pn = set(part.names)
                if pn & touched and not pn <= touched:
                    touched |= pn
                    changed = True
        sites = [s for s in self.sites if set(s.names) & touched]
        blocks = [b for b in self.blocks if set(b.names) & touched]
        if not sites and len(blocks) == 1 and set(blocks[0].names) == touched:
            return self
        ordered = tuple(n for n in self.names if n in touched)
        J = _fill_dense(self, ordered, sites, blocks)
        self.sites = [s for s in self.sites if s not in sites]
        self.blocks = [b for b in self.blocks if b not in blocks]
        self.blocks.append(DenseBlock(ordered, tuple(self.shapes[n] for n in ordered), J))
        return self


def _fill_dense(
    f: Factors, names: Sequence[str], sites: list[OuterSite], blocks: list[DenseBlock]
) -> torch.Tensor:
    """Explicit gradients ``[N, R, p]`` of ``names`` (in that order) from the given parts,
    written straight into one buffer."""
    offs, start = {}, 0
    for name in names:
        size = math.prod(f.shapes[name])
        offs[name] = slice(start, start + size)
        start += size
    J = f.outputs.new_empty(f.n, f.r, start)
    filled: set[str] = set()

    def put(name: str, part: torch.Tensor, index: tuple[slice, ...] | None) -> None:
        if name not in offs:
            return
        view = J[:, :, offs[name]].unflatten(2, f.shapes[name])
        if name not in filled:
            filled.add(name)
            if index is None:
                view.copy_(part)
                return
            view.zero_()
        if index is not None:
            view = view[(slice(None), slice(None), *index)]
        view += part

    for s in sites:
        for name, part in s.dense_parts().items():
            put(name, part, s.w_index if name == s.weight else s.b_index)
    for b in blocks:
        for name, sl in b.offsets().items():
            put(name, b.J[:, :, sl].unflatten(2, f.shapes[name]), None)
    for name in names:
        if name not in filled:
            J[:, :, offs[name]] = 0
    return J


def _check_pair(f1: Factors, f2: Factors, output: str) -> None:
    if not isinstance(f1, Factors) or not isinstance(f2, Factors):
        raise TypeError("contract expects two Factors objects (from jacobian_factors).")
    if f1.names != f2.names or any(f1.shapes[n] != f2.shapes[n] for n in f1.names):
        raise ValueError(
            "f1 and f2 cover different parameters; build both with the same model and params= "
            f"(f1: {list(f1.names)[:4]}..., f2: {list(f2.names)[:4]}...)."
        )
    if output not in OUTPUT_MODES:
        raise ValueError(f"unknown output {output!r}; valid options are {OUTPUT_MODES}.")
    if output != "full" and f1.r != f2.r:
        raise ValueError(
            f"output={output!r} pairs cotangent column r with r, so f1 and f2 need the same "
            f"number of columns, got {f1.r} and {f2.r}."
        )
    if f1.dtype != f2.dtype or f1.device != f2.device:
        raise ValueError(
            f"f1 is {f1.dtype} on {f1.device} but f2 is {f2.dtype} on {f2.device}; build both "
            "with the same dtype and device."
        )


SELF_GRAM_ROWS = 128  # the smallest row block of a symmetric Gram (GEMM speed below it)


def _gram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` for ``a [m, k]``, ``b [n, k]``. When ``b`` is ``a`` the Gram is symmetric:
    only the blocks on and below the diagonal of a ``q x q`` row blocking are multiplied
    (``(q + 1) / 2q`` of the FLOPs, blocks of at least :data:`SELF_GRAM_ROWS` rows) and the
    others are their transposes."""
    m = a.shape[0]
    q = m // SELF_GRAM_ROWS
    if b is not a or q < 2:
        return a @ b.T
    out = a.new_empty(m, m)
    bounds = [m * i // q for i in range(q + 1)]
    for i in range(q):
        ri = slice(bounds[i], bounds[i + 1])
        lower = slice(0, bounds[i + 1])
        block = torch.mm(a[ri], a[lower].T)  # row block i against blocks 0..i
        out[ri, lower] = block
        out[lower.start : bounds[i], ri] = block[:, : bounds[i]].T
    return out


def _dense_gram(J1: torch.Tensor, J2: torch.Tensor, output: str) -> torch.Tensor:
    """Inner products of explicit gradients ``J1 [N1, R1, p]``, ``J2 [N2, R2, p]``."""
    n1, r1, p = J1.shape
    n2, r2, _ = J2.shape
    if output == "full":
        a = J1.reshape(n1 * r1, p)
        return _gram(a, a if J2 is J1 else J2.reshape(n2 * r2, p)).reshape(n1, r1, n2, r2)
    if output == "trace":
        a = J1.reshape(n1, r1 * p)
        return _gram(a, a if J2 is J1 else J2.reshape(n2, r2 * p))
    return torch.bmm(J1.transpose(0, 1), J2.permute(1, 2, 0)).permute(1, 2, 0)


def _input_gram(s1: OuterSite, s2: OuterSite) -> torch.Tensor:
    """``<a[i, t], a'[j, t']>`` per group, ``[N1, T1, N2, T2, G]``, bias column included."""
    if s1.is_index:
        gram = (s1.inp[:, :, None, None] == s2.inp[None, None]).to(s1.cot.dtype)[..., None]
    else:
        n1, t1, g, d = s1.inp.shape
        n2, t2 = s2.inp.shape[:2]
        a1 = s1.inp.permute(2, 0, 1, 3).reshape(g, n1 * t1, d)
        a2 = s2.inp.permute(2, 0, 1, 3).reshape(g, n2 * t2, d)
        gram = torch.bmm(a1, a2.transpose(1, 2)).reshape(g, n1, t1, n2, t2).permute(1, 2, 3, 4, 0)
    w = s1.w_scale * s2.w_scale if s1.weight is not None else 0.0
    b = s1.b_scale * s2.b_scale if s1.bias is not None else 0.0
    if not (isinstance(w, float) and w == 1.0):
        gram.mul_(w)
    if not (isinstance(b, float) and b == 0.0):
        gram.add_(b)
    return gram


def _site_gram(s1: OuterSite, s2: OuterSite, output: str) -> torch.Tensor:
    """Inner products of two sites of the same layer block."""
    n1, r1, t1, g, o = s1.cot.shape
    n2, r2, t2 = s2.cot.shape[:3]
    agram = _input_gram(s1, s2)  # [N1, T1, N2, T2, G]
    if t1 == 1 and t2 == 1 and g == 1:
        a = agram.reshape(n1, n2)
        d1, d2 = s1.cot.reshape(n1, r1, o), s2.cot.reshape(n2, r2, o)
        if output == "full":
            a1 = d1.reshape(n1 * r1, o)
            a2 = a1 if s2 is s1 else d2.reshape(n2 * r2, o)
            return _gram(a1, a2).reshape(n1, r1, n2, r2).mul_(a[:, None, :, None])
        if output == "trace":
            a1 = d1.reshape(n1, r1 * o)
            return _gram(a1, a1 if s2 is s1 else d2.reshape(n2, r2 * o)).mul_(a)
        dg = torch.bmm(d1.transpose(0, 1), d2.permute(1, 2, 0)).permute(1, 2, 0)
        return dg.mul_(a[:, :, None])
    # Sum over positions: P[i, t, g, j, s, o] = sum_t' a-gram[i, t, j, t', g] delta'[j, s, t', g, o]
    p = torch.einsum("itjug,jsugo->itgjso", agram, s2.cot)
    if output == "full":
        return torch.einsum("irtgo,itgjso->irjs", s1.cot, p)
    if output == "trace":
        return torch.einsum("irtgo,itgjro->ij", s1.cot, p)
    return torch.einsum("irtgo,itgjro->ijr", s1.cot, p)


def _empty(f1: Factors, f2: Factors, output: str) -> torch.Tensor:
    shape = {
        "full": (f1.n, f1.r, f2.n, f2.r),
        "trace": (f1.n, f2.n),
        "diagonal": (f1.n, f2.n, f1.r),
    }[output]
    return f1.outputs.new_zeros(shape)


def contract(f1: Factors, f2: Factors, *, output: str = "full") -> torch.Tensor:
    """Inner products of the gradients of ``f1`` and ``f2``, summed over the parameters.

    Args:
        f1, f2: factors of the same model and parameters (possibly at different weights).
        output: ``"full"`` -> ``[N1, R1, N2, R2]``; ``"diagonal"`` -> ``[N1, N2, R]`` (column r
            with column r); ``"trace"`` -> ``[N1, N2]`` (sum of the diagonal).
    """
    _check_pair(f1, f2, output)
    parts: list[torch.Tensor] = []
    clean = _clean_names(f1, f2)
    sites2: dict[tuple[str, ...], list[OuterSite]] = {}
    for s in f2.sites:
        sites2.setdefault(s.key, []).append(s)
    for s1 in f1.sites:
        if set(s1.names) <= clean:
            for s2 in sites2.get(s1.key, []):
                parts.append(_site_gram(s1, s2, output))
    blocks2 = {b.names: b for b in f2.blocks}
    for b1 in f1.blocks:
        if set(b1.names) <= clean:
            parts.append(_dense_gram(b1.J, blocks2[b1.names].J, output))
    rest = [n for n in f1.names if n not in clean]
    if rest:
        parts.append(_dense_gram(_dense_subset(f1, rest), _dense_subset(f2, rest), output))
    if not parts:
        return _empty(f1, f2, output)
    total = parts[0].contiguous()
    for p in parts[1:]:
        total.add_(p)
    return total


def _signature(f: Factors) -> dict[str, set[tuple]]:
    """name -> the parts (site keys, block name tuples) that cover it."""
    sig: dict[str, set[tuple]] = {n: set() for n in f.names}
    for s in f.sites:
        for n in s.names:
            sig[n].add(("site", *s.key))
    for b in f.blocks:
        for n in b.names:
            sig[n].add(("block", *b.names))
    return sig


def _clean_names(f1: Factors, f2: Factors) -> set[str]:
    """Parameters represented alike in f1 and f2, closed under sharing a part."""
    sig1, sig2 = _signature(f1), _signature(f2)
    dirty = {n for n in f1.names if sig1[n] != sig2[n]}
    parts = [set(p.names) for p in (*f1.sites, *f1.blocks, *f2.sites, *f2.blocks)]
    changed = bool(dirty)
    while changed:
        changed = False
        for names in parts:
            if names & dirty and not names <= dirty:
                dirty |= names
                changed = True
    return set(f1.names) - dirty


def _dense_subset(f: Factors, names: Sequence[str]) -> torch.Tensor:
    """Explicit gradients ``[N, R, p]`` of ``names`` only (parts not covering them skipped)."""
    wanted = set(names)
    sites = [s for s in f.sites if set(s.names) & wanted]
    blocks = [b for b in f.blocks if set(b.names) & wanted]
    return _fill_dense(f, names, sites, blocks)


def dense_dot(G: torch.Tensor | Mapping[str, torch.Tensor], f: Factors) -> torch.Tensor:
    """``<G[m], g[i, r]>`` for parameter-space vectors ``G``, as ``[M, N, R]``.

    Args:
        G: ``[M, P]`` flattened in ``f.param_slices`` order, or ``{name: [M, *shape]}``
            (missing names count as zero).
        f: the factors.
    """
    if isinstance(G, torch.Tensor):
        if G.ndim != 2 or G.shape[1] != f.num_params:
            raise ValueError(
                f"G must be [M, P] with P = {f.num_params} (the selected parameters), got "
                f"shape {tuple(G.shape)}."
            )
        m = G.shape[0]
        parts = {n: G[:, sl].reshape(m, *f.shapes[n]) for n, sl in f.param_slices.items()}
    elif isinstance(G, Mapping):
        parts = dict(G)
        for n, v in parts.items():
            if n not in f.shapes:
                raise KeyError(f"G has {n!r}, which is not one of the selected parameters.")
            if tuple(v.shape[1:]) != tuple(f.shapes[n]):
                raise ValueError(
                    f"G[{n!r}] must be [M, *{tuple(f.shapes[n])}], got {tuple(v.shape)}."
                )
        if not parts:
            raise ValueError("G is an empty mapping; give at least one parameter.")
        m = next(iter(parts.values())).shape[0]
    else:
        raise TypeError(f"G must be a tensor [M, P] or a mapping, got {type(G).__name__}.")
    out = f.outputs.new_zeros(m, f.n, f.r)
    for s in f.sites:
        out = out + _site_dot(s, parts, m)
    for b in f.blocks:
        offs = b.offsets()
        pieces = [
            parts[n].reshape(m, -1).to(b.J)
            if n in parts
            else b.J.new_zeros(m, offs[n].stop - offs[n].start)
            for n in b.names
        ]
        vec = torch.cat(pieces, dim=1)
        out = out + torch.einsum("mp,nrp->mnr", vec, b.J)
    return out


def _site_dot(s: OuterSite, parts: Mapping[str, torch.Tensor], m: int) -> torch.Tensor:
    n, r, _, g, o = s.cot.shape
    out = s.cot.new_zeros(m, n, r)
    if s.weight is not None and s.weight in parts:
        w = parts[s.weight].to(s.cot)
        if s.w_index is not None:
            w = w[(slice(None), *s.w_index)]
        if s.is_index:
            wv = w.reshape(m, s.din, o)  # embedding weight [V, d]
            ids = s.inp.clamp_min(0)
            gathered = wv[:, ids]  # [M, N, T, d]
            out = out + torch.einsum("mntd,nrtd->mnr", gathered, s.cot[:, :, :, 0, :])
        else:
            wm = w.reshape(m, g, o, s.din)
            proj = torch.einsum("mgoi,ntgi->mntgo", wm, s.inp)
            out = out + torch.einsum("mntgo,nrtgo->mnr", proj, s.cot)
        out = out * s.w_scale
    if s.bias is not None and s.bias in parts:
        b = parts[s.bias].to(s.cot)
        if s.b_index is not None:
            b = b[(slice(None), *s.b_index)]
        out = out + s.b_scale * torch.einsum("mgo,nrgo->mnr", b.reshape(m, g, o), s.cot.sum(2))
    return out
