"""Layer handlers of the structured method: what to capture in a forward hook and how to turn
the captured inputs and output cotangents into factors.

Each handler covers some direct parameters of one module type. During a hooked forward it
adds a zero "probe" to every output whose cotangent it needs (so autograd can return
d f / d output even if later code modifies that output in place) and records the inputs.
After the backward pass, :meth:`LayerHandler.build` turns the records into
:class:`~kernelens.ntk.factors.OuterSite` / :class:`~kernelens.ntk.factors.DenseBlock` parts.

Batch layout: every captured tensor has the example axis somewhere (``axis``, found by a
probe with batches of 1 and 2 examples); it is moved first, and the remaining non-feature
axes are flattened into positions T.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.modules import module as nn_module

from .factors import DenseBlock, OuterSite

__all__ = ["Capture", "LayerHandler", "handler_for"]

Part = OuterSite | DenseBlock


@dataclass
class Capture:
    """State of one hooked forward pass."""

    probes: list[torch.Tensor] = field(default_factory=list)
    records: dict[str, list[tuple]] = field(default_factory=dict)
    layouts: dict[str, list[torch.Size]] = field(default_factory=dict)
    flops: float = 0.0
    shapes_only: bool = False

    def probe(self, y: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Return ``y + 0`` through a fresh leaf, and the leaf's index."""
        p = torch.zeros_like(y, requires_grad=True)
        self.probes.append(p)
        return y + p, len(self.probes) - 1

    @staticmethod
    def keep(x: torch.Tensor) -> torch.Tensor:
        """Record a layer input. No copy: autograd already forbids modifying a layer's input
        in place after the call whenever its weight is trained, since it saves the input."""
        return x.detach()


def _grad_or_zeros(grads: list[torch.Tensor | None], k: int, like: torch.Size, r: int, ref):
    g = grads[k]
    return g if g is not None else ref.new_zeros(r, *like)


def _to_batch_first(t: torch.Tensor, axis: int) -> torch.Tensor:
    return t.movedim(axis, 0)


def _join(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
    """Concatenate the calls of a layer (no copy for the usual single call)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


class LayerHandler:
    """Base class: ``roles`` maps the module's attribute paths to selected parameter names."""

    covers: tuple[str, ...] = ()

    def __init__(self, name: str, module: nn.Module, roles: dict[str, str]) -> None:
        self.name = name
        self.module = module
        self.roles = roles

    def layout(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """The tensor whose example axis fixes the layout of everything captured."""
        return args[0]

    def axis_ok(self, axis: int, shape: torch.Size) -> bool:
        return True

    def hook(self, cap: Capture):
        def fn(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            if cap.shapes_only:
                cap.layouts.setdefault(self.name, []).append(self.layout(args, kwargs).shape)
                cap.flops += self.flops(output)
                return None
            new, record = self.forward(module, args, kwargs, output, cap)
            cap.records.setdefault(self.name, []).append(record)
            return new

        return fn

    def forward(self, module, args, kwargs, output, cap: Capture) -> tuple[Any, tuple]:
        raise NotImplementedError

    def flops(self, output: Any) -> float:
        """Forward FLOPs of one call: each weight entry used once per output position."""
        y = output[0] if isinstance(output, tuple) else output
        weights = sum(p.numel() for p in self.module.parameters(recurse=False))
        if isinstance(self.module, nn.MultiheadAttention):
            weights += self.module.out_proj.weight.numel()
        channel = 1 if isinstance(self.module, nn.modules.conv._ConvNd) else -1
        return 2.0 * weights * y.numel() / max(1, y.shape[channel])

    def build(
        self,
        records: list[tuple],
        grads: list[torch.Tensor | None],
        axes: list[int],
        n: int,
        r: int,
    ) -> list[Part]:
        raise NotImplementedError

    # helpers ------------------------------------------------------------------------------
    def _cot(self, grads, k, shape, r, ref, axis) -> torch.Tensor:
        """Cotangent of probe k as ``[N, R, ...]`` (example axis first)."""
        g = _grad_or_zeros(grads, k, shape, r, ref)
        return g.movedim(axis + 1, 0)

    def _bias_block(self, d: torch.Tensor) -> DenseBlock:
        """Bias-only gradient: ``d [N, R, T, G, o]`` summed over positions."""
        name = self.roles["bias"]
        shape = self.module.get_parameter("bias").shape
        return DenseBlock((name,), (shape,), d.sum(2).reshape(d.shape[0], d.shape[1], -1))


class LinearHandler(LayerHandler):
    covers = ("weight", "bias")

    def forward(self, module, args, kwargs, output, cap):
        y, k = cap.probe(output)
        return y, (cap.keep(args[0]), k, output.shape)

    def axis_ok(self, axis: int, shape: torch.Size) -> bool:
        return axis < len(shape) - 1

    def build(self, records, grads, axes, n, r):
        ins, cots = [], []
        for (x, k, yshape), axis in zip(records, axes):
            ins.append(_to_batch_first(x, axis).reshape(n, -1, 1, x.shape[-1]))
            d = self._cot(grads, k, yshape, r, x, axis)
            cots.append(d.reshape(n, r, -1, 1, yshape[-1]))
        return self._site(_join(ins, 1), _join(cots, 2))

    def _site(self, a: torch.Tensor, d: torch.Tensor) -> list[Part]:
        w = self.roles.get("weight")
        if w is None:
            return [self._bias_block(d)]
        bias = self.roles.get("bias")
        weight_p = self.module.get_parameter("weight")
        b_shape = self.module.get_parameter("bias").shape if bias else None
        return [
            OuterSite(
                key=(self.name,),
                weight=w,
                bias=bias,
                w_index=None,
                b_index=None,
                w_shape=weight_p.shape,
                b_shape=b_shape,
                cot=d,
                inp=a,
                din=a.shape[-1],
            )
        ]


class ConvHandler(LinearHandler):
    """Conv1d/2d/3d (any stride, padding, padding mode, dilation, groups) via im2col."""

    def axis_ok(self, axis: int, shape: torch.Size) -> bool:
        return axis == 0 and len(shape) == self.module.weight.ndim

    def build(self, records, grads, axes, n, r):
        m: nn.modules.conv._ConvNd = self.module
        g = m.groups
        ins, cots = [], []
        for x, k, yshape in records:
            ins.append(_patches(m, x).reshape(n, -1, g, x.shape[1] // g * math.prod(m.kernel_size)))
            d = self._cot(grads, k, yshape, r, x, 0)  # [N, R, C_out, *L]
            d = d.flatten(3).transpose(2, 3)  # [N, R, T, C_out]
            cots.append(d.reshape(n, r, -1, g, yshape[1] // g))
        return self._site(_join(ins, 1), _join(cots, 2))


def _patches(m: nn.modules.conv._ConvNd, x: torch.Tensor) -> torch.Tensor:
    """im2col for any spatial rank: ``[N, C, *S] -> [N, T, C * prod(k)]`` (C-major)."""
    nd = len(m.kernel_size)
    if m.padding_mode != "zeros":
        x = F.pad(x, m._reversed_padding_repeated_twice, mode=m.padding_mode)
    elif isinstance(m.padding, str):
        if m.padding == "same":
            pads: list[int] = []
            for k, d in zip(reversed(m.kernel_size), reversed(m.dilation)):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
    elif any(m.padding):
        pads = []
        for p in reversed(m.padding):
            pads += [p, p]
        x = F.pad(x, pads)
    for i, (k, s, d) in enumerate(zip(m.kernel_size, m.stride, m.dilation)):
        x = x.unfold(2 + i, d * (k - 1) + 1, s)
        if d > 1:
            x = x[..., ::d]
    # x: [N, C, L1..Ld, k1..kd] -> [N, L1..Ld, C, k1..kd]
    n, c = x.shape[:2]
    perm = [0, *range(2, 2 + nd), 1, *range(2 + nd, 2 + 2 * nd)]
    return x.permute(perm).reshape(n, -1, c * math.prod(m.kernel_size))


class EmbeddingHandler(LayerHandler):
    covers = ("weight",)

    def flops(self, output: Any) -> float:
        return 0.0  # a lookup

    def forward(self, module, args, kwargs, output, cap):
        y, k = cap.probe(output)
        return y, (cap.keep(args[0]), k, output.shape)

    def build(self, records, grads, axes, n, r):
        m: nn.Embedding = self.module
        ids_all, cots = [], []
        for (ids, k, yshape), axis in zip(records, axes):
            ids_b = _to_batch_first(ids, axis).reshape(n, -1)
            d = self._cot(grads, k, yshape, r, m.weight, axis).reshape(n, r, -1, 1, yshape[-1])
            if m.padding_idx is not None:
                d = d * (ids_b != m.padding_idx)[:, None, :, None, None].to(d.dtype)
            ids_all.append(ids_b)
            cots.append(d)
        w = m.get_parameter("weight")
        return [
            OuterSite(
                key=(self.name,),
                weight=self.roles["weight"],
                bias=None,
                w_index=None,
                b_index=None,
                w_shape=w.shape,
                b_shape=None,
                cot=_join(cots, 2),
                inp=_join(ids_all, 1).long(),
                din=m.num_embeddings,
            )
        ]


class NormHandler(LayerHandler):
    """Affine parameters of LayerNorm / RMSNorm / GroupNorm / BatchNorm (eval): the gradient
    of ``y = xhat * w + b`` is ``sum_pos delta * xhat`` and ``sum_pos delta`` (explicit)."""

    covers = ("weight", "bias")

    def _xhat(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        if isinstance(m, nn.LayerNorm):
            return F.layer_norm(x, m.normalized_shape, None, None, m.eps)
        if isinstance(m, nn.GroupNorm):
            return F.group_norm(x, m.num_groups, None, None, m.eps)
        if hasattr(nn, "RMSNorm") and isinstance(m, nn.RMSNorm):
            return F.rms_norm(x, m.normalized_shape, None, m.eps)
        return F.batch_norm(x, m.running_mean, m.running_var, None, None, False, 0.0, m.eps)

    def _trailing(self) -> int:
        """Number of trailing feature axes the parameters span (channel-first norms: -1)."""
        m = self.module
        if isinstance(m, nn.GroupNorm | nn.modules.batchnorm._BatchNorm):
            return -1
        return len(m.normalized_shape)

    def axis_ok(self, axis: int, shape: torch.Size) -> bool:
        k = self._trailing()
        return axis == 0 if k < 0 else axis < len(shape) - k

    def forward(self, module, args, kwargs, output, cap):
        y, k = cap.probe(output)
        with torch.no_grad():
            xhat = self._xhat(args[0].detach())
        return y, (xhat, k, output.shape)

    def build(self, records, grads, axes, n, r):
        names = tuple(self.roles[a] for a in self.covers if a in self.roles)
        total: torch.Tensor | None = None
        for (xhat, k, yshape), axis in zip(records, axes):
            d = self._cot(grads, k, yshape, r, xhat, axis)  # [N, R, ...]
            xh = _to_batch_first(xhat, axis)[:, None]
            parts = []
            for attr in self.covers:
                if attr in self.roles:
                    v = d * xh if attr == "weight" else d
                    parts.append(self._reduce(v, n, r))
            j = _join(parts, 2)
            total = j if total is None else total + j
        shapes = tuple(self.module.get_parameter(a).shape for a in self.covers if a in self.roles)
        return [DenseBlock(names, shapes, total)]

    def _reduce(self, v: torch.Tensor, n: int, r: int) -> torch.Tensor:
        """Sum ``v [N, R, ...]`` over positions to the parameter shape, flattened."""
        k = self._trailing()
        if k < 0:  # channel axis right after the batch: v [N, R, C, *spatial]
            return v.flatten(3).sum(3) if v.ndim > 3 else v
        feat = math.prod(v.shape[v.ndim - k :])
        return v.reshape(n, r, -1, feat).sum(2)


class AttentionHandler(LayerHandler):
    """nn.MultiheadAttention: recompute the module's output with its projections made explicit.

    The module calls ``F.multi_head_attention_forward`` with ``in_proj_weight`` directly, so
    there is no Linear submodule to hook. The hook recomputes the output as
    ``out_proj(attention(W_q q + b_q, W_k k + b_k, W_v v + b_v))``, calling the module itself
    with identity projections for the attention core (so masks, causal flags, bias_k/v and
    zero-attention behave exactly as in the module), and captures the four projections.
    """

    covers = (
        "in_proj_weight",
        "in_proj_bias",
        "q_proj_weight",
        "k_proj_weight",
        "v_proj_weight",
        "out_proj.weight",
        "out_proj.bias",
    )

    def __init__(self, name: str, module: nn.Module, roles: dict[str, str]) -> None:
        super().__init__(name, module, roles)
        self.signature = inspect.signature(module.forward)
        self._inside = False

    def hook(self, cap: Capture):
        outer = super().hook(cap)

        def fn(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            if self._inside:  # the recomputation's own call of the module
                return None
            self._inside = True
            try:
                return outer(module, args, kwargs, output)
            finally:
                self._inside = False

        return fn

    def layout(self, args, kwargs):
        return self.signature.bind(*args, **kwargs).arguments["query"]

    def axis_ok(self, axis: int, shape: torch.Size) -> bool:
        return len(shape) == 3 and axis < 2

    def _projections(self):
        m: nn.MultiheadAttention = self.module
        e = m.embed_dim
        if m._qkv_same_embed_dim:
            w = m.in_proj_weight
            ws = (w[:e], w[e : 2 * e], w[2 * e :])
        else:
            ws = (m.q_proj_weight, m.k_proj_weight, m.v_proj_weight)
        b = m.in_proj_bias
        bs = (b[:e], b[e : 2 * e], b[2 * e :]) if b is not None else (None, None, None)
        return ws, bs

    def forward(self, module, args, kwargs, output, cap):
        m: nn.MultiheadAttention = module
        bound = self.signature.bind(*args, **kwargs)
        arguments = dict(bound.arguments)
        ins = [arguments["query"], arguments["key"], arguments["value"]]
        ws, bs = self._projections()
        projected, keys = [], []
        for x, w, b in zip(ins, ws, bs):
            p, k = cap.probe(F.linear(x, w, b))
            projected.append(p)
            keys.append(k)
        e, ref = m.embed_dim, projected[0]
        eye = torch.eye(e, dtype=ref.dtype, device=ref.device)
        ident: dict[str, torch.Tensor] = {"out_proj.weight": eye}
        if m.out_proj.bias is not None:
            ident["out_proj.bias"] = ref.new_zeros(e)
        if m._qkv_same_embed_dim:
            ident["in_proj_weight"] = torch.cat([eye, eye, eye])
        else:
            ident.update(q_proj_weight=eye, k_proj_weight=eye, v_proj_weight=eye)
        if m.in_proj_bias is not None:
            ident["in_proj_bias"] = ref.new_zeros(3 * e)
        arguments.update(query=projected[0], key=projected[1], value=projected[2])
        core, attn_weights = functional_call(m, ident, (), arguments, strict=False)
        y, ko = cap.probe(F.linear(core, m.out_proj.weight, m.out_proj.bias))
        record = (
            tuple(cap.keep(x) for x in ins),
            cap.keep(core),
            tuple(keys),
            ko,
            tuple(p.shape for p in projected),
            y.shape,
        )
        return (y, attn_weights), record

    def build(self, records, grads, axes, n, r):
        m: nn.MultiheadAttention = self.module
        e = m.embed_dim
        parts: dict[str, tuple[list, list]] = {p: ([], []) for p in ("q", "k", "v", "out")}
        for (ins, core, keys, ko, pshapes, yshape), axis in zip(records, axes):
            for part, x, k, shape in zip(("q", "k", "v"), ins, keys, pshapes):
                parts[part][0].append(_to_batch_first(x, axis).reshape(n, -1, 1, x.shape[-1]))
                d = self._cot(grads, k, shape, r, x, axis)
                parts[part][1].append(d.reshape(n, r, -1, 1, e))
            parts["out"][0].append(_to_batch_first(core, axis).reshape(n, -1, 1, e))
            d = self._cot(grads, ko, yshape, r, core, axis)
            parts["out"][1].append(d.reshape(n, r, -1, 1, e))
        out: list[Part] = []
        packed = m._qkv_same_embed_dim
        for i, part in enumerate(("q", "k", "v")):
            w_attr = "in_proj_weight" if packed else f"{part}_proj_weight"
            rows = (slice(i * e, (i + 1) * e),)
            out += self._part(
                part,
                w_attr,
                "in_proj_bias",
                rows if packed else None,
                rows,
                _join(parts[part][0], 1),
                _join(parts[part][1], 2),
            )
        out += self._part(
            "out",
            "out_proj.weight",
            "out_proj.bias",
            None,
            None,
            _join(parts["out"][0], 1),
            _join(parts["out"][1], 2),
        )
        return out

    def _part(self, part, w_attr, b_attr, w_index, b_index, a, d) -> list[Part]:
        w, b = self.roles.get(w_attr), self.roles.get(b_attr)
        if w is None and b is None:
            return []
        e = self.module.embed_dim
        if w is None:
            j = d.sum(2).reshape(d.shape[0], d.shape[1], e)
            full = self.module.get_parameter(b_attr).shape
            if b_index is not None:
                j_full = j.new_zeros(d.shape[0], d.shape[1], *full)
                j_full[:, :, b_index[0]] = j
                j = j_full
            return [DenseBlock((b,), (full,), j.reshape(j.shape[0], j.shape[1], -1))]
        return [
            OuterSite(
                key=(self.name, part),
                weight=w,
                bias=b,
                w_index=w_index,
                b_index=b_index if b is not None else None,
                w_shape=torch.Size([e, a.shape[-1]]),
                b_shape=torch.Size([e]) if b is not None else None,
                cot=d,
                inp=a,
                din=a.shape[-1],
            )
        ]


_NORMS: tuple[type, ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.batchnorm._BatchNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def _plain_forward(module: nn.Module) -> bool:
    """Whether ``module`` computes what its torch.nn class computes: its ``forward`` (and a
    convolution's ``_conv_forward``) is the torch.nn class's own and no forward hook (of the
    module or global) can change its output. A subclass that overrides ``forward`` is not
    covered (its parameters use the exact per-example fallback)."""
    base = next(c for c in type(module).__mro__ if c.__module__.startswith("torch.nn"))
    if type(module).forward is not base.forward:
        return False
    conv = getattr(base, "_conv_forward", None)
    if conv is not None and type(module)._conv_forward is not conv:
        return False
    return not (module._forward_hooks or nn_module._global_forward_hooks)


def handler_for(name: str, module: nn.Module, param_names: dict[str, str]) -> LayerHandler | None:
    """The handler covering ``module``'s selected parameters, or None if not covered.

    Args:
        name: the module's qualified name.
        module: the module.
        param_names: attribute path (e.g. ``"weight"``, ``"out_proj.bias"``) -> selected
            canonical parameter name, for the parameters this module owns.
    """
    if not _plain_forward(module):
        return None
    if isinstance(module, nn.MultiheadAttention):
        cls: type[LayerHandler] = AttentionHandler
    elif isinstance(module, nn.Linear):
        cls = LinearHandler
    elif isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        cls = ConvHandler
    elif isinstance(module, nn.Embedding):
        if module.max_norm is not None or module.scale_grad_by_freq:
            return None
        cls = EmbeddingHandler
    elif isinstance(module, _NORMS):
        cls = NormHandler
    else:
        return None
    roles = {a: n for a, n in param_names.items() if a in cls.covers}
    if not roles:
        return None
    return cls(name, module, roles)
