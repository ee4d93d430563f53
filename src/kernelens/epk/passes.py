"""The two schedules of the EPK computation over the steps, for one tile of test points.

* :func:`decompose_tile` runs forward over the steps: per step it splits the actual update
  ``Delta_s`` into the example part ``E_s`` (the optimizer law applied to the batch gradients),
  the weight-decay part and the residual ``R_s``, and integrates along the step
  (:class:`~kernelens.epk.integration.PathIntegrator`).
* *factored* (SGD with or without momentum or Nesterov; every coefficient of the update law a
  scalar): at each accepted quadrature node the test factors contract directly with the
  loss-gradient factors of the batches still carried by the momentum buffer
  (:class:`FactoredWindow`, a geometric window truncated at round-off; one batch for plain
  SGD); no parameter-space vector per test point is formed.
* *backward* (Adam, AdamW, whose per-entry denominators break the factored structure, and
  momentum runs where the window would cost more): :func:`backward_pass` accumulates ``G_r``
  (``[T, O, P]`` per tile) backwards with :class:`~kernelens.epk.optim.BackwardAccumulator`
  from the logged nodes and contracts it with each batch's gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from .._memory import element_size, resolve_memory_budget
from .._progress import progress
from ..ntk import Factors, contract, dense_dot, vjp
from .integration import AUTO_NODES, AcceptedNodes, NodeCallback, PathIntegrator
from .optim import (
    BackwardAccumulator,
    StepRule,
    forward_update,
    gradient_tolerance,
    roundoff_tolerance,
)
from .path import PathModel
from .results import PathDecomposition
from .trajectory import StepRecord

__all__ = [
    "SCHEDULES",
    "FactoredWindow",
    "KernelSteps",
    "StepUpdate",
    "WindowCoefficients",
    "backward_pass",
    "bytes_per_test_point",
    "choose_schedule",
    "decompose_tile",
    "window_length",
]

Tensors = dict[str, torch.Tensor]
#: ``None`` (no kernel values), ``"sum"`` or a list of steps.
KernelSteps = str | list[int] | None
#: The two schedules.
SCHEDULES = ("factored", "backward")


def factor_bytes(fac: Factors) -> int:
    """Bytes per example held by a Factors object (its sites and dense blocks)."""
    total = sum(s.bytes_per_example() for s in fac.sites)
    total += sum(b.J[0].numel() * b.J.element_size() for b in fac.blocks)
    return int(total)


def choose_schedule(
    path: PathModel,
    steps: list[tuple[StepRule, ...]],
    wanted: str,
    memory_budget: int | float | None,
) -> str:
    """``"factored"`` or ``"backward"`` for the run's step rules (``wanted``: ``"auto"`` or
    one of them). Plain SGD is factored unless ``"backward"`` is asked for; momentum is
    factored when its window costs no more than the dense pass (per test point and step:
    ``window x nodes x batch x factor size`` against ``O x P x (nodes + batch)``) and the
    window's batch factors fit half the budget; preconditioned or non-uniform laws are
    backward."""
    rules = [r for st in steps for r in st]
    if wanted == "backward":
        return wanted
    if all(r.beta == 0.0 and not r.preconditioned for r in rules):
        return "factored"  # plain SGD: one batch per step, always the cheapest
    uniform = all(r == st[0] for st in steps for r in st)
    possible = uniform and not any(r.preconditioned for r in rules)
    if wanted == "factored" and not possible:
        raise ValueError(
            "schedule='factored' needs an update law with scalar coefficients shared by all "
            "param groups (SGD with momentum or Nesterov); Adam's per-entry denominators "
            "and groups with different momentum need schedule='backward' (or 'auto')."
        )
    if wanted == "factored" or not possible:
        return "factored" if possible else "backward"
    traj = path.trajectory
    probe = path.factors(path.batch_inputs(traj.step(0))[:1], path.weights(0))
    elems = factor_bytes(probe) / element_size(path.dtype)
    first = min(traj.num_steps, 8)
    batch = sum(traj.step(s).batch_size for s in range(first)) / first
    nodes = 2 * AUTO_NODES[0]
    mean, longest = window_length(steps, True)
    factored = mean * nodes * batch * elems
    dense = traj.num_outputs * path.num_params * (nodes + batch)
    held = longest * batch * factor_bytes(probe)  # the window's batch factors
    fits = held <= resolve_memory_budget(memory_budget) / 2
    return "factored" if factored <= dense and fits else "backward"


def bytes_per_test_point(
    path: PathModel,
    x: torch.Tensor,
    factored: bool,
    attributions: bool,
    kernel_steps: KernelSteps,
) -> int:
    """Working-set bytes per test point of :func:`decompose_tile` (for tiling)."""
    elem = element_size(path.dtype)
    n, o = path.trajectory.num_examples, path.trajectory.num_outputs
    probe = path.factors(x[:1], path.weights(0))
    per_point = 3 * factor_bytes(probe)  # node factors alive plus contraction temporaries
    if not factored:
        per_point += 4 * o * path.num_params * elem  # gbar, H, G and a dense slice
    if attributions:
        per_point += n * o * elem
    if kernel_steps is not None:
        k = 1 if kernel_steps == "sum" else len(kernel_steps)
        per_point += k * n * o * o * elem
    return per_point


@dataclass
class StepUpdate:
    """The actual update of one step, split (compute dtype, per parameter).

    Attributes:
        delta: ``Delta_s = w_{s+1} - w_s``.
        example: ``E_s``, the optimizer law applied to the batch-mean loss gradient.
        decay: the weight-decay part.
        residual: ``R_s = Delta_s - E_s - decay``.
        unexplained: ``max|R_s| / max|Delta_s|``.
        beyond_roundoff: whether some parameter's ``R_s`` exceeds round-off in its dtype.
    """

    delta: Tensors
    example: Tensors
    decay: Tensors
    residual: Tensors
    unexplained: float
    beyond_roundoff: bool


def split_update(
    path: PathModel,
    rec: StepRecord,
    w0: Tensors,
    w1: Tensors,
    buffers: tuple[Tensors, Tensors, Tensors],
) -> StepUpdate:
    """Split step ``rec``'s update; advances the example, decay and tolerance ``buffers`` in
    place.

    ``R_s`` is beyond round-off where, for some entry, it exceeds the recorder's gradient
    tolerance (:func:`~kernelens.epk.optim.gradient_tolerance`, which it enforced on every
    ``p.grad``) propagated through the update law with absolute coefficients, plus the
    rounding of the step itself (:func:`~kernelens.epk.optim.roundoff_tolerance`). The
    propagation matters for Adam, whose small denominators amplify the rounding of small
    gradient entries.
    """
    names, group = path.names, path.group_of
    buf_e, buf_w, buf_tol = buffers
    pre = path.preconditioners(rec)
    delta = {k: w1[k] - w0[k] for k in names}
    e = vjp(path.net, path.batch_inputs(rec), path.output_grads(rec) / rec.batch_size,
            weights=w0, params=names)  # fmt: skip
    example = forward_update(rec.rules, group, buf_e, e, pre)
    upd = forward_update(rec.rules, group, buf_w, {k: rec.rules[group[k]].l2 * w0[k]
                                                   for k in names}, pre)  # fmt: skip
    decay = {k: upd[k] - rec.rules[group[k]].decoupled * w0[k] for k in names}
    residual = {k: delta[k] - example[k] - decay[k] for k in names}
    e_max = {k: float(e[k].abs().max()) if e[k].numel() else 0.0 for k in names}
    e_all = max(e_max.values(), default=0.0)
    bound = {k: torch.full_like(e[k], gradient_tolerance(e_max[k], e_all, path.param_dtypes[k]))
             for k in names}  # fmt: skip
    rules_abs = [replace(r, alpha=abs(r.alpha), beta=abs(r.beta), rho=abs(r.rho),
                         kappa=abs(r.kappa)) for r in rec.rules]  # fmt: skip
    propagated = forward_update(rules_abs, group, buf_tol, bound, pre)
    r_max, d_max, beyond = 0.0, 0.0, False
    for k in names:
        if not delta[k].numel():
            continue
        rk, dk = float(residual[k].abs().max()), float(delta[k].abs().max())
        wk = max(float(w0[k].abs().max()), float(w1[k].abs().max()))
        allowed = propagated[k].abs() + roundoff_tolerance(dk, wk, path.param_dtypes[k])
        beyond |= bool((residual[k].abs() > allowed).any())
        r_max, d_max = max(r_max, rk), max(d_max, dk)
    unexplained = r_max / d_max if d_max > 0 else (0.0 if r_max == 0 else float("inf"))
    return StepUpdate(delta, example, decay, residual, unexplained, beyond)


def _kernel_slot(kernel_steps: KernelSteps, s: int) -> int | None:
    if kernel_steps is None:
        return None
    if kernel_steps == "sum":
        return 0
    return kernel_steps.index(s) if s in kernel_steps else None


@dataclass
class _Accumulators:
    """Per-tile sums the passes add into."""

    example_total: torch.Tensor  # [T, O]
    attributions: torch.Tensor | None  # [T, N, O]
    kernel: torch.Tensor | None  # [K, T, N, O, O]


#: A window entry is dropped once its coefficient has decayed below this fraction of its first
#: (the geometric tail it leaves out is below float64 round-off of the entry's contribution).
WINDOW_CUTOFF = 2.0**-60


@dataclass
class _WindowEntry:
    """Step ``r``'s batch, kept while later steps still carry its gradient (momentum)."""

    indices: torch.Tensor
    batch: int
    train: Factors  # loss-gradient factors at w_r, pre-scaled per group
    jac: Factors | None  # output factors at w_r (kernel values), pre-scaled per group
    slot: int | None


class WindowCoefficients:
    """The scalars ``c_{s,r}`` of the batches a momentum buffer still carries, step by step.

    ``c_{s,s} = -(alpha_s + beta_s kappa_s)`` and ``c_{s,r} = -beta_s kappa_r
    prod_{j=r+1..s} rho_j``; a batch leaves once ``kappa_r prod rho`` has decayed below
    :data:`WINDOW_CUTOFF` of ``kappa_r`` (beyond float64 round-off of its contribution).
    Without ``uniform`` laws (plain SGD with per-group step sizes folded into the factors) the
    window is the step's own batch with coefficient -1.
    """

    def __init__(self, uniform: bool) -> None:
        self.uniform = uniform
        self._carried: list[float] = []
        self._first: list[float] = []

    def advance(self, rules: tuple[StepRule, ...]) -> tuple[list[bool], list[float]]:
        """Enter the next step: which earlier batches stay (in order) and the coefficients of
        the batches then in the window (this step's last)."""
        r = rules[0]
        rho, kappa = (r.rho, r.kappa) if self.uniform else (0.0, 0.0)
        carried = [c * rho for c in self._carried]
        keep = [abs(c) > WINDOW_CUTOFF * abs(f) for c, f in zip(carried, self._first)]
        self._carried = [c for c, k in zip(carried, keep) if k] + [kappa]
        self._first = [f for f, k in zip(self._first, keep) if k] + [kappa or 1.0]
        if not self.uniform:
            return keep, [-1.0]
        return keep, [-r.beta * c for c in self._carried[:-1]] + [-(r.alpha + r.beta * kappa)]


def _group_scales(rules: tuple[StepRule, ...], uniform: bool) -> dict[int, float]:
    """The per-group factor pre-scale: 1 for uniform laws, plain SGD's step sizes otherwise."""
    return {g: 1.0 if uniform else r.alpha for g, r in enumerate(rules)}


class FactoredWindow:
    """The example part of every step without a preconditioner, in factored form: each
    accepted node of step ``s`` contracts its test factors with the batch factors of the
    steps still in the window, times :class:`WindowCoefficients`. Plain SGD keeps one batch:
    the paper's structured algorithm. Requires every param group to follow the same law
    (``uniform``), except for plain SGD, whose per-group step sizes go into the factors.
    """

    def __init__(self, path: PathModel, acc: _Accumulators, uniform: bool) -> None:
        self.path = path
        self.acc = acc
        self.uniform = uniform
        self.coefficients = WindowCoefficients(uniform)
        self.entries: list[_WindowEntry] = []

    def push(self, rec: StepRecord, w0: Tensors, slot: int | None) -> NodeCallback:
        """Enter step ``rec`` (at weights ``w0``); returns its node callback."""
        path = self.path
        pre = _group_scales(rec.rules, self.uniform)
        scales = {k: pre[path.group_of[k]] for k in path.names}
        keep, coefs = self.coefficients.advance(rec.rules)
        self.entries = [e for e, k in zip(self.entries, keep) if k]
        xb = path.batch_inputs(rec)
        train = path.factors(xb, w0, cotangents=path.output_grads(rec), view=False)
        jac = None
        if slot is not None:
            jac = path.factors(xb, w0).scale_({k: -v * rec.grad_scale for k, v in scales.items()})
        self.entries.append(
            _WindowEntry(rec.indices, rec.batch_size, train.scale_(scales), jac, slot)
        )
        live = [(e, c) for e, c in zip(self.entries, coefs) if c != 0.0]
        acc, t_n = self.acc, self.acc.example_total.shape[0]

        def rows(values: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
            """``values`` for the points ``pts`` as rows of all ``t_n`` points (zeros
            elsewhere), so the scatter over examples is one in-place index_add_."""
            if pts.numel() == t_n:
                return values
            out = values.new_zeros(t_n, *values.shape[1:])
            out[pts] = values
            return out

        def on_nodes(pts: torch.Tensor, nodes: list[tuple[float, float, Factors]]) -> None:
            for _, q, fac in nodes:
                for e, c in live:
                    a = (c * q / e.batch) * contract(fac, e.train)[:, :, :, 0].transpose(1, 2)
                    acc.example_total[pts] += a.sum(1)  # a: [P, b, O]
                    if acc.attributions is not None:
                        acc.attributions.index_add_(1, e.indices, rows(a, pts))
                    if e.jac is not None:
                        k = (c * q / e.batch) * contract(fac, e.jac).transpose(1, 2)
                        acc.kernel[e.slot].index_add_(1, e.indices, rows(k, pts))

        return on_nodes


def window_length(rules: list[tuple[StepRule, ...]], uniform: bool) -> tuple[float, int]:
    """``(mean, max)`` number of batches :class:`FactoredWindow` contracts with per step."""
    window = WindowCoefficients(uniform)
    sizes = [sum(c != 0.0 for c in window.advance(step)[1]) or 1 for step in rules]
    return sum(sizes) / max(len(sizes), 1), max(sizes, default=1)


def backward_pass(
    path: PathModel,
    x: torch.Tensor,
    node_log: list[list[AcceptedNodes]],
    acc: _Accumulators,
    kernel_steps: KernelSteps,
    show_progress: bool | None,
) -> None:
    """Momentum / Adam: ``G_r`` backwards over the steps, contracted with each batch."""
    traj = path.trajectory
    t_n, o = x.shape[0], traj.num_outputs
    names, shapes = path.names, path.shapes
    accumulator = BackwardAccumulator(path.group_of)
    S = traj.num_steps
    w1 = path.weights(S)
    for r in progress(reversed(range(S)), total=S, desc="epk backward",
                      enable=show_progress):  # fmt: skip
        rec = traj.step(r)
        w0 = path.weights(r)
        delta = {k: w1[k] - w0[k] for k in names}
        gbar = {k: torch.zeros(t_n, o, *shapes[k], dtype=path.dtype) for k in names}
        for node in node_log[r]:
            w_t = {k: w0[k] + node.t * delta[k] for k in names}
            dense = path.factors(x[node.points], w_t).to_dense_dict()
            whole = node.points.numel() == t_n
            for k in names:
                if whole:
                    gbar[k].add_(dense[k], alpha=node.weight)
                else:
                    gbar[k].index_add_(0, node.points, dense[k], alpha=node.weight)
        G = accumulator.push(
            rec.rules,
            {k: v.reshape(t_n * o, *shapes[k]) for k, v in gbar.items()},
            path.preconditioners(rec),
        )
        del gbar
        b = rec.batch_size
        xb = path.batch_inputs(rec)
        train = path.factors(xb, w0, cotangents=path.output_grads(rec), view=False)
        a = dense_dot(G, train)[:, :, 0].reshape(t_n, o, b).transpose(1, 2) / b  # [T, b, O]
        acc.example_total += a.sum(1)
        if acc.attributions is not None:
            acc.attributions.index_add_(1, rec.indices, a)
        slot = _kernel_slot(kernel_steps, r)
        if slot is not None:
            jac = path.factors(xb, w0)
            k = -rec.grad_scale * dense_dot(G, jac).reshape(t_n, o, b, o).transpose(1, 2) / b
            acc.kernel[slot].index_add_(1, rec.indices, k)
        w1 = w0


def decompose_tile(
    path: PathModel,
    integrator: PathIntegrator,
    x: torch.Tensor,
    *,
    factored: bool,
    uniform: bool,
    has_decay: bool,
    start_nodes: int,
    want_attr: bool,
    kernel_steps: KernelSteps,
    show_progress: bool | None,
) -> PathDecomposition:
    """The whole decomposition for the test points ``x`` ``[T, ...]`` (one tile)."""
    traj = path.trajectory
    S, n, o, t_n = traj.num_steps, traj.num_examples, traj.num_outputs, x.shape[0]
    zeros: Callable[..., torch.Tensor] = lambda *shape: torch.zeros(*shape, dtype=path.dtype)  # noqa: E731
    n_kernels = 0 if kernel_steps is None else 1 if kernel_steps == "sum" else len(kernel_steps)
    acc = _Accumulators(
        example_total=zeros(t_n, o),
        attributions=zeros(t_n, n, o) if want_attr else None,
        kernel=zeros(n_kernels, t_n, n, o, o) if kernel_steps is not None else None,
    )
    wd_term, res_term, quad = zeros(t_n, o), zeros(t_n, o), zeros(t_n, o)
    step_res, unexplained = zeros(S), torch.zeros(S, dtype=torch.float64)
    evals = torch.zeros(S, dtype=torch.int64)
    unconverged = torch.zeros(S, dtype=torch.int64)
    beyond: list[int] = []
    node_log: list[list[AcceptedNodes]] = []

    w_first, w_last = path.weights(0), path.weights(S)
    initial = path.forward(w_first, x)
    network = path.forward(w_last, x)
    scale = torch.maximum(initial.abs().amax(1), network.abs().amax(1)).clamp_min(1e-300)
    buffers: tuple[Tensors, Tensors, Tensors] = ({}, {}, {})  # example, decay, tolerance
    w0, f0 = w_first, initial
    start = start_nodes
    window = FactoredWindow(path, acc, uniform) if factored else None
    for s in progress(range(S), desc="epk steps", enable=show_progress):
        rec = traj.step(s)
        w1 = path.weights(s + 1)
        f1 = network if s == S - 1 else path.forward(w1, x)
        upd = split_update(path, rec, w0, w1, buffers)
        unexplained[s] = upd.unexplained
        if upd.beyond_roundoff:
            beyond.append(s)
        rows = [upd.delta, upd.residual, upd.decay] if has_decay else [upd.delta, upd.residual]
        tangents = {k: torch.stack([r[k] for r in rows]) for k in path.names}
        on_nodes = None
        if window is not None:
            on_nodes = window.push(rec, w0, _kernel_slot(kernel_steps, s))
        step = integrator.integrate(x, w0, upd.delta, f0, f1, scale, tangents, on_nodes, start)
        node_log.append(step.nodes)
        start = step.next_start
        res_term += step.projections[1]
        if has_decay:
            wd_term += step.projections[2]
        quad += step.quadrature_residual
        step_res[s] = step.quadrature_residual.abs().max() if t_n else 0.0
        evals[s] = step.evaluations
        unconverged[s] = step.unconverged
        w0, f0 = w1, f1

    if window is None:
        backward_pass(path, x, node_log, acc, kernel_steps, show_progress)
    kernel = acc.kernel
    if kernel is not None and kernel_steps == "sum":
        kernel = kernel[0]
    return PathDecomposition(
        initial=initial,
        network=network,
        example_total=acc.example_total,
        weight_decay=wd_term,
        residual=res_term,
        quadrature_residual=quad,
        step_residual=step_res,
        step_unconverged=unconverged,
        step_unexplained=unexplained,
        unexplained_steps=tuple(beyond),
        evaluations=evals,
        attributions=acc.attributions,
        kernel=kernel,
    )
