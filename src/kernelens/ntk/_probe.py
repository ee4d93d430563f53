"""The probe every NTK call runs first: three forwards of one and two examples that observe
what the model does, so that no later step has to trust a cached verdict.

What it observes (all on every call, none of it cached):

- the number of outputs O (the one place the engine learns it);
- whether the examples are independent: ``f(x[:1])`` must equal ``f(x[:2])[:1]`` (a forward
  that couples the batch, e.g. ``h - h.mean(0)`` or batch statistics, fails) and two
  forwards of the same batch must agree (a random forward, e.g. ``F.dropout(h,
  training=True)``, fails); both are refused with a named error;
- which selected parameters are used outside the modules that own them: every torch call
  the forward makes is seen (a :class:`~torch.overrides.TorchFunctionMode`), with the stack of
  modules it runs in, so ``h @ lin.weight.T`` outside ``lin`` is found however small its
  contribution (such parameters go to the exact per-example fallback);
- the layouts of the covered layers' inputs (example axis) and the forward FLOPs;
- the bytes one example's forward allocates (total and largest), which size the tiles.

The sequence of parameter uses, with the modules they happen in, is the key of the plan
cache, so a forward that changes behaviour (a flag, a new hook) gets a fresh plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from ._layers import Capture, LayerHandler
from ._model import BatchCouplingError, ModelCall, RandomForwardError

__all__ = [
    "BatchCouplingError",
    "Observation",
    "RandomForwardError",
    "examples_pair",
    "observe",
]

#: Agreement required between two forwards that should give the same numbers (relative to the
#: largest output): round-off of a different batch size, far below any real coupling.
ROUNDOFF_FACTOR = 1000.0

#: Tensor attributes that read metadata only (a use of the parameter that carries no gradient).
_METADATA = frozenset(
    {
        "shape",
        "dtype",
        "device",
        "size",
        "dim",
        "ndim",
        "numel",
        "is_floating_point",
        "requires_grad",
        "layout",
        "element_size",
        "stride",
        "is_cuda",
        "__len__",
    }
)


@dataclass(frozen=True)
class Observation:
    """What the probe saw.

    Attributes:
        outputs: O, the number of outputs per example.
        outside: selected parameters used outside every module that owns them.
        uses: ``(function, parameter, owner module or "")`` for every parameter use, in order.
        layouts1, layouts2: handler name -> captured layout shapes (1- and 2-example batch;
            ``layouts2`` is None when only one example exists).
        flops: forward FLOPs of one example in the covered layers.
        example_bytes: bytes one example's forward allocates (all ops together).
        largest_bytes: the largest single allocation of one example's forward.
    """

    outputs: int
    outside: frozenset[str]
    uses: tuple[tuple[str, str, str], ...]
    layouts1: dict[str, list[torch.Size]] = field(hash=False)
    layouts2: dict[str, list[torch.Size]] | None = field(hash=False)
    flops: float
    example_bytes: float
    largest_bytes: float

    def key(self) -> tuple:
        """What the plan cache keys on: everything observed that a plan depends on."""
        lay = lambda d: None if d is None else tuple(sorted((k, tuple(v)) for k, v in d.items()))  # noqa: E731
        return (self.outputs, self.outside, self.uses, lay(self.layouts1), lay(self.layouts2))


def _function_name(func) -> str:
    owner = getattr(func, "__self__", None)
    if getattr(func, "__name__", "") == "__get__" and owner is not None:
        return getattr(owner, "__name__", "__get__")
    return getattr(func, "__name__", repr(func))


class _UseTracer(TorchFunctionMode):
    """Records every torch call that takes a selected parameter, with the innermost owning
    module on the current module stack (empty when none of its owners is running), and sums
    the bytes of the new tensors the calls return (top-level torch calls: a fused function
    such as ``F.multi_head_attention_forward`` counts its output only)."""

    def __init__(self, params: dict[int, str], owners: dict[str, dict[int, str]]) -> None:
        super().__init__()
        self.params = params
        self.owners = owners
        self.stack: list[nn.Module] = []
        self.uses: list[tuple[str, str, str]] = []
        self.total = 0
        self.largest = 0

    def enter(self, module: nn.Module, args: tuple) -> None:
        self.stack.append(module)

    def leave(self, module: nn.Module, args: tuple, output) -> None:
        self.stack.pop()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = None
        for t in tree_leaves((args, kwargs)):
            if isinstance(t, torch.Tensor) and id(t) in self.params:
                name = name or _function_name(func)
                if name in _METADATA:
                    break
                pname = self.params[id(t)]
                own = self.owners.get(pname, {})
                inside = next((own[id(m)] for m in reversed(self.stack) if id(m) in own), "")
                self.uses.append((name, pname, inside))
        out = func(*args, **kwargs)
        self._count(args, kwargs, out)
        return out

    def _count(self, args, kwargs, out) -> None:
        """Add the bytes of the new storages ``out`` holds (views of inputs are free)."""
        seen = {
            t.untyped_storage().data_ptr()
            for t in tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor) and t.layout == torch.strided
        }
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                st = t.untyped_storage()
                if st.data_ptr() not in seen:
                    seen.add(st.data_ptr())
                    self.total += st.nbytes()
                    self.largest = max(self.largest, st.nbytes())


def examples_pair(x1: torch.Tensor, x2: torch.Tensor | None) -> torch.Tensor | None:
    """Two examples whose first is ``x1[0]`` (None when only one example exists)."""
    if x1.shape[0] >= 2:
        return x1[:2]
    if x2 is not None:
        return torch.cat([x1[:1], x2[:1].to(x1.device)])
    return None


def _hooked(call: ModelCall, handlers: list[LayerHandler], x, cap: Capture, where, tracer=None):
    hooks = [h.module.register_forward_hook(h.hook(cap), with_kwargs=True) for h in handlers]
    if tracer is not None:
        for m in call.model.modules():
            hooks.append(m.register_forward_pre_hook(tracer.enter))
            hooks.append(m.register_forward_hook(tracer.leave, always_call=True))
    try:
        with torch.no_grad():
            return call(x, where=where)
    finally:
        for hk in hooks:
            hk.remove()


def _differ(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference of ``a`` and ``b`` relative to their scale (inf for a NaN)."""
    scale = float(torch.maximum(a.abs().max(), b.abs().max())) if a.numel() else 0.0
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    if diff != diff:
        return float("inf")
    return diff / scale if scale > 0 else diff


def observe(
    call: ModelCall,
    handlers: list[LayerHandler],
    x1: torch.Tensor,
    x2: torch.Tensor | None,
    where: str,
) -> Observation:
    """Probe the model on one and two examples (see the module docstring).

    Raises:
        RandomForwardError: two forwards of the same two examples differ.
        BatchCouplingError: the first example's output depends on the second example.
    """
    params = {id(call.values[n]): n for n in call.names}
    owners: dict[str, dict[int, str]] = {}
    for h in handlers:
        for nm in h.roles.values():
            owners.setdefault(nm, {})[id(h.module)] = h.name or "<root>"
    tracer = _UseTracer(params, owners)
    cap1 = Capture(shapes_only=True)
    with tracer:
        y1 = _hooked(call, handlers, x1[:1], cap1, where, tracer)
    pair = examples_pair(x1, x2)
    layouts2 = None
    if pair is not None:
        cap2 = Capture(shapes_only=True)
        y2 = _hooked(call, handlers, pair, cap2, where)
        layouts2 = cap2.layouts
        with torch.no_grad():
            again = call(pair, where=where)
        eps = torch.finfo(y1.dtype).eps
        if _differ(y2, again) > ROUNDOFF_FACTOR * eps:
            raise RandomForwardError(
                f"two forwards of the same inputs ({where}) gave different outputs (relative "
                f"difference {_differ(y2, again):.2g}), so the network is random (e.g. dropout "
                "in training mode, F.dropout(..., training=True), or noise drawn in forward) "
                "and its NTK is not a fixed kernel. Make the forward deterministic: call "
                "model.eval(), or fix the randomness per example (e.g. masks held in a buffer)."
            )
        if _differ(y1, y2[:1]) > ROUNDOFF_FACTOR * eps:
            raise BatchCouplingError(
                f"the model's output for one example depends on the other examples of the batch "
                f"(f(x[:1]) and f(x[:2])[:1] differ by {_differ(y1, y2[:1]):.2g} relative on "
                f"{where}): the forward couples the examples (e.g. h - h.mean(0), or batch "
                "statistics in a normalisation layer), so per-example gradients and the NTK are "
                "undefined. Make the forward treat examples independently (BatchNorm: "
                "model.eval() with running statistics; custom layers: statistics over features, "
                "not over the batch)."
            )
    covered = {n for h in handlers for n in h.roles.values()}
    other = sum(call.values[n].numel() for n in call.names if n not in covered)
    outside = frozenset(p for _, p, inside in tracer.uses if p in covered and not inside)
    return Observation(
        outputs=y1.shape[1],
        outside=outside,
        uses=tuple(tracer.uses),
        layouts1=cap1.layouts,
        layouts2=layouts2,
        flops=cap1.flops + 2.0 * other,
        example_bytes=float(tracer.total),
        largest_bytes=float(tracer.largest),
    )
