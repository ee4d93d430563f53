"""Planning: which parameters the structured method covers, how each layer's block is
computed, and what it costs.

Every call starts with the probe of :mod:`kernelens.ntk._probe` (three tiny forwards): it
fixes the output count and the example axis of every captured tensor, counts the forward
FLOPs and allocations, refuses batch-coupled or random models, and sees which parameters are
used outside their modules (those layers move to the per-example fallback). A backstop then
checks that the factors of the remaining layers reproduce autograd's gradient to round-off.
Only that backstop and the factor shapes are cached, keyed on what the probe observed.
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
from torch import nn

from .._memory import element_size, resolve_memory_budget
from ._autodiff import ACTIVATION_LIVE, batched_grad, per_example_grads, vjp_products
from ._layers import Capture, LayerHandler, handler_for
from ._model import ModelCall
from ._probe import Observation, examples_pair, observe
from .factors import DenseBlock, Factors, OuterSite

__all__ = [
    "FORMS",
    "METHODS",
    "GroupPlan",
    "Method",
    "NTKPlan",
    "Plan",
    "Structure",
    "extract",
    "make_plan",
    "probe_structure",
]

Method = Literal["auto", "structured", "jacobian", "ntvp"]
METHODS: tuple[str, ...] = get_args(Method)
#: Cost multiplier of the positions form (small-inner-dimension batched products) relative
#: to the FLOPs of a large matrix product, measured on CPU (see docs/ntk.md).
GEMM_PENALTY = 8.0
#: Agreement of the factors with autograd's gradient that the backstop check requires, in units
#: of the dtype's eps (round-off of two summation orders; a real difference is far larger).
CHECK_ROUNDOFF = 1000.0
FORMS = {
    "product": "Kronecker product of input and cotangent Grams (one position)",
    "positions": "Grams summed over positions (weights shared across positions)",
    "explicit": "per-example block formed from the factors, then its Gram",
    "per-example": "per-example Jacobian (torch.func vmap, loop where vmap fails)",
    "ntvp": "NTK-vector products (vjp then jvp), no Jacobian formed",
}


@dataclass
class GroupPlan:
    """How one parameter group's NTK block is computed, and its estimated cost.

    ``flops`` and ``memory`` are estimates for the whole call; ``alternatives`` maps each
    candidate form to its estimated FLOPs (the plan picks the cheapest allowed one)."""

    module: str
    kind: str
    names: tuple[str, ...]
    form: str
    flops: float = 0.0
    memory: float = 0.0
    alternatives: dict[str, float] = field(default_factory=dict)

    @property
    def method(self) -> str:
        if self.form == "ntvp":
            return "ntvp"
        return "jacobian" if self.form == "per-example" else "structured"


@dataclass
class NTKPlan:
    """The plan of an NTK computation (see :func:`kernelens.ntk.explain`).

    Attributes:
        groups: one entry per parameter group.
        n1, n2, outputs: problem size (``outputs`` = O).
        output: the output mode.
        forward_flops: FLOPs of one example's forward pass.
        memory_budget: bytes.
    """

    groups: list[GroupPlan]
    n1: int
    n2: int
    outputs: int
    output: str
    forward_flops: float
    memory_budget: int

    @property
    def total_flops(self) -> float:
        return sum(g.flops for g in self.groups)

    def __str__(self) -> str:
        head = (
            f"NTK plan: N1={self.n1}, N2={self.n2}, O={self.outputs}, output={self.output!r}, "
            f"forward {self.forward_flops / 1e6:.3g} MFLOP/example, "
            f"budget {self.memory_budget / 2**20:.0f} MiB"
        )
        rows = [("group", "layer", "method", "form", "est. GFLOP", "est. MiB")]
        for g in self.groups:
            label = g.module or "<root>"
            rows.append(
                (
                    label,
                    g.kind,
                    g.method,
                    g.form,
                    f"{g.flops / 1e9:.3g}",
                    f"{g.memory / 2**20:.3g}",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [head]
        for k, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append(f"total est. {self.total_flops / 1e9:.3g} GFLOP")
        for form in dict.fromkeys(g.form for g in self.groups):
            lines.append(f"  {form}: {FORMS[form]}")
        return "\n".join(lines)

    __repr__ = __str__


@dataclass(kw_only=True)
class Plan:
    """Internal plan: the handlers, axes, fallback parameters and per-layer forms.

    Attributes:
        call: the model call.
        handlers, axes: covered layers and the example axis of their captured tensors.
        fallback, fallback_form: uncovered parameters and how they are computed
            (``"per-example"`` or ``"ntvp"``).
        explicit: handlers whose sites are made explicit blocks.
        observation: this call's probe (outputs O, FLOPs, allocation sizes).
        example_bytes: bytes of one example's factors (kept).
        extract_bytes: bytes one example costs while its factors are extracted (the kept
            factors, the hooked forward and backward, blocks being formed).
        pair_bytes: bytes per example pair of a kernel tile (the contraction's temporaries).
        info: the public summary.
    """

    call: ModelCall
    handlers: list[LayerHandler]
    axes: dict[str, list[int]]
    fallback: tuple[str, ...]
    fallback_form: str
    explicit: set[str]
    observation: Observation
    example_bytes: float
    extract_bytes: float
    pair_bytes: float
    info: NTKPlan

    @property
    def outputs(self) -> int:
        return self.observation.outputs


# -- ownership and coverage ----------------------------------------------------------------
def _owners(model: nn.Module, selected: Sequence[str]) -> list[tuple[str, nn.Module, dict]]:
    """``(module name, module, {attribute path: canonical name})`` for modules owning selected
    parameters directly (MultiheadAttention also owns its out_proj's)."""
    canon = {id(p): n for n, p in model.named_parameters()}
    chosen = set(selected)
    mods = list(model.named_modules())
    skip = set()
    for _, mod in mods:
        if isinstance(mod, nn.MultiheadAttention):
            skip.add(id(mod.out_proj))
    out = []
    for name, mod in mods:
        if id(mod) in skip:
            continue
        attrs = {a: canon[id(p)] for a, p in mod._parameters.items() if p is not None}
        if isinstance(mod, nn.MultiheadAttention):
            for a, p in mod.out_proj._parameters.items():
                if p is not None:
                    attrs[f"out_proj.{a}"] = canon[id(p)]
        attrs = {a: n for a, n in attrs.items() if n in chosen}
        if attrs:
            out.append((name, mod, attrs))
    return out


def _coverage(model: nn.Module, selected: Sequence[str]) -> tuple[list[LayerHandler], set[str]]:
    handlers, uncovered = [], set()
    for name, mod, attrs in _owners(model, selected):
        h = handler_for(name, mod, attrs)
        covered = set(h.roles) if h is not None else set()
        uncovered |= {n for a, n in attrs.items() if a not in covered}
        if h is not None:
            handlers.append(h)
    # a parameter also owned by an uncovered module is computed entirely by the fallback
    for h in handlers:
        h.roles = {a: n for a, n in h.roles.items() if n not in uncovered}
    return [h for h in handlers if h.roles], uncovered


def _run_hooks(call: ModelCall, handlers, x, cap: Capture, values=None, where="x"):
    hooks = [h.module.register_forward_hook(h.hook(cap), with_kwargs=True) for h in handlers]
    try:
        return call(x, values, where=where)
    finally:
        for hk in hooks:
            hk.remove()


def _find_axes(shape1: torch.Size, shape2: torch.Size | None) -> int | None:
    if shape2 is None:
        ones = [i for i, s in enumerate(shape1) if s == 1]
        return ones[0] if ones else None
    if len(shape1) != len(shape2):
        return None
    diff = [i for i, (a, b) in enumerate(zip(shape1, shape2)) if a != b]
    if len(diff) == 1 and shape1[diff[0]] == 1 and shape2[diff[0]] == 2:
        return diff[0]
    return None


def _axes(handlers: list[LayerHandler], obs: Observation):
    """The example axis of each handler call, from the probe's layouts; handlers where it is
    ambiguous are dropped (their parameters use the fallback)."""
    axes, kept, dropped = {}, [], set()
    for h in handlers:
        s1 = obs.layouts1.get(h.name, [])
        s2 = [None] * len(s1) if obs.layouts2 is None else obs.layouts2.get(h.name, [])
        found = [_find_axes(a, b) for a, b in zip(s1, s2)] if len(s1) == len(s2) else [None]
        if all(a is not None and h.axis_ok(a, sh) for a, sh in zip(found, s1)):
            axes[h.name] = found
            kept.append(h)
        else:
            dropped |= set(h.roles.values())
    return kept, axes, dropped


def _chunk_parts(call: ModelCall, handlers, axes, x, cot, values, where):
    """Hooked forward + one batched backward: the structured parts of one chunk."""
    cap = Capture()
    with torch.enable_grad():
        y = _run_hooks(call, handlers, x, cap, values, where)
        n, o = y.shape
        if cot is None:
            go = torch.eye(o, dtype=y.dtype, device=y.device)[:, None, :].expand(o, n, o)
        else:
            go = cot.to(y.dtype).permute(2, 0, 1)
        r = go.shape[0]
        grads = batched_grad(y, cap.probes, go.contiguous()) if cap.probes else []
    parts: list = []
    for h in handlers:
        recs = cap.records.get(h.name)
        if recs:
            parts += h.build(recs, grads, axes[h.name], n, r)
    return y.detach(), parts, r


def _check_handlers(call, handlers, axes, x, outputs: int, where) -> tuple[set[str], list]:
    """Handlers whose factors disagree with autograd on a random cotangent beyond round-off,
    and the parts of that run (their shapes price the forms). A backstop behind the
    structural checks (plain forward, no hooks, no use outside the module)."""
    n = x.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(0)
    c = torch.randn(n, outputs, 1, generator=gen, dtype=call.dtype).to(call.device)
    y, parts, r = _chunk_parts(call, handlers, axes, x, c, None, where)
    f = Factors(
        call.names,
        call.shapes,
        [p for p in parts if isinstance(p, OuterSite)],
        _merge_blocks([p for p in parts if isinstance(p, DenseBlock)]),
        y,
        n,
        r,
    )
    summed = f.combine(torch.ones(1, n, r, dtype=y.dtype, device=y.device))
    _, auto = vjp_products(call, x, c.permute(2, 0, 1), where=where)
    tol = CHECK_ROUNDOFF * torch.finfo(call.dtype).eps
    bad = set()
    for h in handlers:
        for nm in h.roles.values():
            got, want = summed[nm][0], auto[nm][0]
            scale = float(want.norm()) + float(got.norm())
            if float((got - want).norm()) > tol * scale:
                bad.add(h.name)
    return bad, parts


def _merge_blocks(blocks: list[DenseBlock]) -> list[DenseBlock]:
    """Sum blocks over the same parameters (e.g. a layer called several times)."""
    merged: dict[tuple[str, ...], DenseBlock] = {}
    for b in blocks:
        if b.names in merged:
            merged[b.names] = DenseBlock(b.names, b.shapes, merged[b.names].J + b.J)
        else:
            merged[b.names] = b
    return list(merged.values())


# -- costs ---------------------------------------------------------------------------------
def _site_costs(
    site: tuple[int, int, int, int, bool, bool], n_other: int, r: int, output: str, es: int
) -> dict[str, tuple]:
    """(FLOPs per example pair, bytes per pair, bytes per example) of each form of a site
    with ``t`` positions, ``g`` groups, ``o`` outputs and ``din`` inputs."""
    t, g, o, din, bias, index = site
    d = din + (1 if bias else 0)
    rr = r * r if output == "full" else r
    if t == 1 and g == 1:
        factored = (2.0 * (d + rr * o), es * 2.0 * rr, es * (r * o + d))
        name = "product"
    else:
        # the sums over position pairs run as batched products with inner dimension T (and
        # R rows), far below GEMM speed: measured ~8x slower per FLOP than one large Gram
        flops = GEMM_PENALTY * (2.0 * t * t * g * (d + r * o) + 2.0 * rr * t * g * o)
        factored = (flops, es * (t * g * r * o + t * t * g + rr), es * t * g * (r * o + d))
        name = "positions"
    p = g * o * d if not index else o * din
    explicit = (2.0 * rr * p + 2.0 * r * t * p / max(1, n_other), es * rr, es * r * p)
    return {name: factored, "explicit": explicit}


@dataclass
class Structure:
    """What a plan learns from the probes; depends on the model's structure, not on N.

    Attributes:
        observation: what this call's probe saw (never cached).
        handlers, axes: the covered layers and the example axis of each captured tensor.
        uncovered: selected parameters for the fallback.
        sites: per handler, the shapes of its factor sites (price the forms).
    """

    observation: Observation
    handlers: list[LayerHandler]
    axes: dict[str, list[int]]
    uncovered: frozenset[str]
    sites: dict[str, list[tuple[int, int, int, int, bool, bool]]]  # t, g, o, din, bias, index

    @property
    def outputs(self) -> int:
        return self.observation.outputs


@dataclass
class _Cached:
    model: weakref.ref
    handlers: list[LayerHandler]
    axes: dict[str, list[int]]
    uncovered: frozenset[str]
    sites: dict[str, list[tuple[int, int, int, int, bool, bool]]]


_CACHE: OrderedDict[tuple, _Cached] = OrderedDict()
_CACHE_SIZE = 32


def _fingerprint(call: ModelCall, x1, use_handlers: bool, handlers, obs: Observation) -> tuple:
    mods = tuple((n, id(m), type(m).__name__) for n, m in call.model.named_modules())
    params = tuple((n, tuple(p.shape)) for n, p in call.model.named_parameters())
    cover = tuple((h.name, tuple(sorted(h.roles.items()))) for h in handlers)
    return (
        id(call.model),
        mods,
        params,
        call.names,
        tuple(x1.shape[1:]),
        x1.dtype,
        call.dtype,
        str(call.device),
        use_handlers,
        cover,
        obs.key(),
    )


def probe_structure(
    call: ModelCall, x1: torch.Tensor, x2: torch.Tensor | None, *, method: str, where: str
) -> Structure:
    """Probe the model (every call: :func:`~kernelens.ntk._probe.observe`) and decide which
    parameters the structured method covers. Only the numerical backstop check and the site
    shapes are cached, keyed on everything the probe observed.

    Raises:
        RandomForwardError, BatchCouplingError: from the probe.
    """
    use_handlers = method in ("auto", "structured")
    handlers, uncovered = _coverage(call.model, call.names) if use_handlers else ([], set())
    obs = observe(call, handlers, x1, x2, where)
    key = _fingerprint(call, x1, use_handlers, handlers, obs)
    hit = _CACHE.get(key)
    if hit is not None and hit.model() is call.model:
        _CACHE.move_to_end(key)
        return Structure(obs, hit.handlers, hit.axes, hit.uncovered, hit.sites)
    handlers, axes, dropped = _axes(handlers, obs)
    uncovered |= dropped
    # a parameter used outside its module: that module's whole block goes to the fallback
    outside = {h.name for h in handlers if set(h.roles.values()) & obs.outside}
    sites: dict[str, list] = {}
    if handlers:
        pair = examples_pair(x1, x2)
        kept = [h for h in handlers if h.name not in outside]
        bad, parts = (
            _check_handlers(call, kept, axes, x1[:1] if pair is None else pair, obs.outputs, where)
            if kept
            else (set(), [])
        )
        bad |= outside
        for h in handlers:
            if h.name in bad:
                uncovered |= set(h.roles.values())
        handlers = [h for h in handlers if h.name not in bad]
        for p in parts:
            if isinstance(p, OuterSite) and p.key[0] not in bad:
                _, _, t, g, o = p.cot.shape
                sites.setdefault(p.key[0], []).append(
                    (t, g, o, p.din, p.bias is not None, p.is_index)
                )
    if not use_handlers:
        uncovered = set(call.names)
    cached = _Cached(weakref.ref(call.model), handlers, axes, frozenset(uncovered), sites)
    _CACHE[key] = cached
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return Structure(obs, handlers, axes, cached.uncovered, sites)


def make_plan(
    call: ModelCall,
    x1: torch.Tensor,
    x2: torch.Tensor | None,
    *,
    method: str,
    output: str,
    memory_budget: int | None,
    r: int | None = None,
    where: str = "x1",
    structure: Structure | None = None,
) -> Plan:
    """Plan an NTK / factor computation for ``call`` on ``x1`` (and ``x2``); ``structure``
    is this call's :func:`probe_structure` when the caller already ran it."""
    budget = resolve_memory_budget(memory_budget)
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    use_handlers = method in ("auto", "structured")
    st = structure or probe_structure(call, x1, x2, method=method, where=where)
    handlers, fwd_flops, n_out = st.handlers, st.observation.flops, st.outputs
    r = n_out if r is None else r
    rr = r * r if output == "full" else r
    es = element_size(call.dtype)
    groups: list[GroupPlan] = []
    explicit: set[str] = set()
    # bytes per example kept (the factors) and passing through one extraction; bytes per pair
    keep, work, pair_bytes = 0.0, 0.0, 0.0
    owners: dict[str, int] = {}
    for h in handlers:
        for nm in h.roles.values():
            owners[nm] = owners.get(nm, 0) + 1
    for h in handlers:
        kind = type(h.module).__name__
        tied = any(owners[nm] > 1 for nm in h.roles.values())
        if tied:  # shared with another layer: made explicit when the factors are assembled
            kind += " (tied)"
        sites = st.sites.get(h.name, [])
        if not sites:  # explicit blocks (norms, biases only)
            p = sum(math.prod(call.shapes[nm]) for nm in h.roles.values())
            flops = 2.0 * rr * p * n1 * n2
            groups.append(
                GroupPlan(
                    h.name, kind, tuple(h.roles.values()), "explicit", flops, es * r * p * (n1 + n2)
                )
            )
            keep += es * r * p
            work += 2 * es * r * p
            continue
        costs = [_site_costs(s, n2, r, output, es) for s in sites]
        forms = {k: tuple(sum(c[k][i] for c in costs) for i in range(3)) for k in costs[0]}
        fact = next(k for k in forms if k != "explicit")
        choice = fact
        cheaper = forms["explicit"][0] < forms[fact][0]
        if tied or (cheaper and (method == "auto" or fact == "positions")):
            choice = "explicit"
        if choice == "explicit":
            explicit.add(h.name)
        f_pair, b_pair, b_ex = forms[choice]
        groups.append(
            GroupPlan(
                h.name,
                kind,
                tuple(h.roles.values()),
                choice,
                f_pair * n1 * n2,
                b_ex * (n1 + n2) + b_pair * min(n1 * n2, 1 << 16),
                {k: v[0] * n1 * n2 for k, v in forms.items()},
            )
        )
        raw = forms[fact][2]  # the sites as captured, before any block is formed
        keep += b_ex
        work += 2 * raw + (2 * b_ex if choice == "explicit" else 0.0)
        pair_bytes = max(pair_bytes, b_pair)
    fallback = tuple(n for n in call.names if n in st.uncovered)
    fallback_form = "per-example"
    if fallback:
        p = sum(math.prod(call.shapes[nm]) for nm in fallback)
        jac_flops = 3.0 * fwd_flops * r * (n1 + n2) + 2.0 * rr * p * n1 * n2
        ntvp_flops = 3.0 * fwd_flops * r * n2 * (n1 + n2)
        jac_mem = es * r * p * 16  # a tile of at least 16 examples
        if method == "ntvp" or (method == "auto" and jac_mem > budget / 2):
            fallback_form = "ntvp"
        kinds = sorted({type(m).__name__ for _, m, a in _owners(call.model, fallback)})
        groups.append(
            GroupPlan(
                "<not covered>" if use_handlers else "<all>",
                ",".join(kinds) or "-",
                fallback,
                fallback_form,
                ntvp_flops if fallback_form == "ntvp" else jac_flops,
                es * r * p * 16 if fallback_form != "ntvp" else es * p * 16,
                {"per-example": jac_flops, "ntvp": ntvp_flops},
            )
        )
        if fallback_form == "per-example":
            keep += es * r * p
            work += 2 * es * r * p
    # the hooked forward's saved activations, the batched backward's live cotangents (R
    # columns), the cotangent basis and the outputs
    obs = st.observation
    work += obs.example_bytes + r * ACTIVATION_LIVE * obs.largest_bytes + es * r * (n_out + 1)
    # a tile: the result block, its mirror and the contraction's operands of the same size
    pair_bytes += 3 * es * rr + es
    info = NTKPlan(groups, n1, n2, n_out, output, fwd_flops, budget)
    return Plan(
        call=call,
        handlers=handlers,
        axes=st.axes,
        fallback=fallback,
        fallback_form=fallback_form,
        explicit=explicit,
        observation=st.observation,
        example_bytes=keep,
        extract_bytes=keep + work,
        pair_bytes=pair_bytes,
        info=info,
    )


def extract(
    plan: Plan,
    x: torch.Tensor,
    cot: torch.Tensor | None,
    *,
    where: str = "x",
) -> Factors:
    """Factors of ``x`` (one chunk; the caller tiles) following ``plan``."""
    call = plan.call
    n = x.shape[0]
    parts: list = []
    y = None
    r = plan.outputs if cot is None else cot.shape[2]
    if plan.handlers:
        y, parts, r = _chunk_parts(call, plan.handlers, plan.axes, x, cot, None, where)
    if plan.fallback and plan.fallback_form == "per-example":
        yf, J = per_example_grads(call, plan.fallback, x, cot, where=where)
        y = yf if y is None else y
        shapes = tuple(call.shapes[nm] for nm in plan.fallback)
        parts.append(DenseBlock(plan.fallback, shapes, J.to(yf.dtype)))
    if y is None:
        with torch.no_grad():
            y = call(x, where=where)
    sites = [p for p in parts if isinstance(p, OuterSite)]
    blocks = _merge_blocks([p for p in parts if isinstance(p, DenseBlock)])
    f = Factors(call.names, call.shapes, sites, blocks, y.detach(), n, r)
    explicit_names = {nm for s in sites if s.key[0] in plan.explicit for nm in s.names}
    if explicit_names:
        f.densify(explicit_names)
    _resolve_ties(f)
    return f


def _resolve_ties(f: Factors) -> None:
    """Parameters covered by sites of different layers (weight tying across module types)
    are made explicit over the union of the parameters involved."""
    owners: dict[tuple[str, tuple], set[tuple]] = {}
    for s in f.sites:
        for nm, idx in ((s.weight, s.w_index), (s.bias, s.b_index)):
            if nm is not None:
                owners.setdefault((nm, repr(idx)), set()).add(s.key)
    shared = {nm for (nm, _), keys in owners.items() if len(keys) > 1}
    in_blocks = {nm for b in f.blocks for nm in b.names}
    shared |= {nm for s in f.sites for nm in s.names if nm in in_blocks}
    if shared:
        f.densify(shared)
