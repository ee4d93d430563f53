"""The Exact Path Kernel of a recorded training run.

For each step ``s`` (weights ``w_s -> w_{s+1} = w_s + Delta_s``) the fundamental theorem of
calculus along the straight segment gives, exactly,

    f(x; w_{s+1}) - f(x; w_s) = <gbar_s(x), Delta_s>,
    gbar_s(x) = int_0^1 grad_w f(x; w_s + t Delta_s) dt.

The update splits exactly into an example part (a linear combination of per-example loss
gradients ``g_{r,i}`` taken at ``w_r``, ``r <= s``; :mod:`kernelens.epk.optim`), a weight-decay
part and a residual (floating-point rounding of the actual step), so every test output is the
initial output plus one contribution per training example plus two small terms. docs/epk.md
has the derivation; this module computes it through the :mod:`kernelens.ntk` engine.

Two schedules, chosen from the recorded optimizer:

* *structured* (plain SGD, every step's update is ``-lr * e_s``): per step, contract the test
  factors at the quadrature nodes with the batch's loss-gradient factors; no parameter-space
  vector per test point is ever formed.
* *dense* (momentum, Nesterov, Adam, AdamW): a forward pass over the steps computes the
  weight-decay and residual terms and fixes the quadrature nodes; a backward pass accumulates
  ``G_r`` (``[T, O, P]`` per tile of test points) with :class:`~kernelens.epk.optim.BackwardAccumulator`
  and contracts it with each batch's gradients, linear in the number of steps.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .._memory import element_size, tile_size
from .._progress import progress
from .._validation import check_choice, check_positive, check_positive_int
from ..ntk import contract, dense_dot, jacobian_factors, vjp
from .gp import path_gp_variance
from .optim import BackwardAccumulator, forward_update
from .quadrature import RULES, DyadicInterval, rule_nodes
from .trajectory import Trajectory

__all__ = ["OUTPUTS", "ExactPathKernel", "PathDecomposition", "VerifyReport"]

#: Output views: the model's outputs, or their log-softmax (cross-entropy only).
OUTPUTS = ("logits", "log_probs")
#: ``nodes="auto"``: Gauss-Legendre on [0, 1] with 2, then 4, then 8 nodes where the residual
#: is too large (spectral convergence for smooth paths); then bisection with 4 nodes per half
#: (for kinks, where more nodes do not help).
AUTO_NODES = (2, 4, 8)
AUTO_BISECT_NODES = 4

Tensors = dict[str, torch.Tensor]


@dataclass
class PathDecomposition:
    """``f(x; w_S)`` split along the training path, for test points ``[T, ...]``.

    ``prediction = initial + example_total + weight_decay + residual`` reproduces ``network`` up
    to ``quadrature_residual`` (which is measured exactly, see :class:`VerifyReport`).

    Attributes:
        initial: ``[T, O]`` f(x; w_0).
        network: ``[T, O]`` f(x; w_S) (in the compute dtype).
        example_total: ``[T, O]`` the sum of all training examples' contributions.
        weight_decay: ``[T, O]`` contribution of weight decay (L2 or decoupled).
        residual: ``[T, O]`` the part of the actual updates no example or decay explains
            (floating-point rounding of the recorded steps; ~0 for float64 training).
        quadrature_residual: ``[T, O]`` sum over steps of
            ``f(x; w_{s+1}) - f(x; w_s) - (quadrature of <gbar_s(x), Delta_s>)``.
        step_residual: ``[S]`` max over test points and outputs of that per-step residual.
        evaluations: ``[S]`` Jacobian evaluations (test point x node) per step.
        unconverged: (test point, interval) pairs accepted above the tolerance (refinement
            stopped at ``max_depth``, or a fixed rule with ``nodes=int``).
        attributions: ``[T, N, O]`` per-example contributions, or None if not requested.
        kernel: ``[T, N, O, O]`` (summed) or ``[K, T, N, O, O]`` (per step), or None.
    """

    initial: torch.Tensor
    network: torch.Tensor
    example_total: torch.Tensor
    weight_decay: torch.Tensor
    residual: torch.Tensor
    quadrature_residual: torch.Tensor
    step_residual: torch.Tensor
    evaluations: torch.Tensor
    unconverged: int = 0
    attributions: torch.Tensor | None = None
    kernel: torch.Tensor | None = None

    @property
    def prediction(self) -> torch.Tensor:
        """``[T, O]`` f(x; w_0) + examples + weight decay + residual."""
        return self.initial + self.example_total + self.weight_decay + self.residual


@dataclass
class VerifyReport:
    """How exactly the path decomposition reproduces the trained network.

    Attributes:
        max_abs_error: ``max |prediction - network|`` (compute dtype, e.g. float64).
        max_rel_error: ``max_abs_error / max |network|``.
        worst_step: the step with the largest quadrature residual; ``worst_step_error`` its
            size relative to ``max |network|``.
        max_abs_error_model_dtype, max_rel_error_model_dtype: against the network evaluated
            in the model's own dtype (for float32 models this includes float32 rounding).
        unconverged: (test point, interval) pairs accepted above the tolerance.
        evaluations: total Jacobian evaluations (test point x node).
    """

    max_abs_error: float
    max_rel_error: float
    worst_step: int
    worst_step_error: float
    max_abs_error_model_dtype: float
    max_rel_error_model_dtype: float
    unconverged: int
    evaluations: int
    details: PathDecomposition = field(repr=False)


def _log_softmax_view(model: nn.Module) -> nn.Module:
    """Make ``model`` return ``log_softmax`` of its outputs, keeping its parameter names."""
    model.register_forward_hook(lambda _m, _inp, out: F.log_softmax(out, dim=-1))
    return model


def _next_start(start: int, needed: int, headroom: float) -> int:
    """The first rule for the next step (consecutive steps are alike): the largest rule this
    step needed on [0, 1], or one rule fewer if the first rule met the tolerance with four
    orders of magnitude to spare (halving the nodes costs about that much accuracy)."""
    rung = AUTO_NODES.index(needed)
    if needed == start and headroom < 1e-4:
        rung = max(rung - 1, 0)
    return AUTO_NODES[rung]


def _factor_bytes(fac: Any) -> int:
    """Bytes per example held by a Factors object (its sites and dense blocks)."""
    total = sum(s.bytes_per_example() for s in fac.sites)
    total += sum(b.J[0].numel() * b.J.element_size() for b in fac.blocks)
    return int(total)


class ExactPathKernel:
    """A trained network, read as an exact kernel machine over its training examples.

    Args:
        trajectory: a recorded :class:`Trajectory` (its ``model`` must be the architecture
            it was recorded with).
        nodes: ``"auto"`` for adaptive Gauss-Legendre (2, 4, then 8 nodes on [0, 1] where the
            exact residual exceeds the tolerance, then bisection with 4 nodes per half), or
            an int for a fixed rule on [0, 1] without refinement.
        rule: ``"gauss-legendre"`` or ``"midpoint"`` (the public EPK code's rule; for
            comparisons).
        rtol: per-step tolerance of the adaptive rule, relative to ``max |f(x)|`` per test
            point and to the interval length.
        max_depth: maximal bisection depth (ReLU-type kinks converge only linearly).
        output: ``"logits"`` (the model's outputs; an ensemble of per-step kernels) or
            ``"log_probs"`` (log-softmax of the outputs; with cross-entropy the loss gradient
            ``-onehot(y)`` is constant, so one kernel machine reproduces them).
        dtype: compute dtype (float64 by default, whatever the model's dtype).
        memory_budget: bytes for the per-tile working set (None: 2 GiB, or $KERNELENS_MEMORY_BUDGET).
        show_progress: progress bar over steps (None: only on a terminal).
    """

    def __init__(
        self,
        trajectory: Trajectory,
        *,
        nodes: int | str = "auto",
        rule: str = "gauss-legendre",
        rtol: float = 1e-12,
        max_depth: int = 8,
        output: str = "logits",
        dtype: torch.dtype = torch.float64,
        memory_budget: int | float | None = None,
        show_progress: bool | None = None,
    ) -> None:
        if not isinstance(trajectory, Trajectory):
            raise TypeError(
                f"trajectory must be a kernelens.epk.Trajectory, got {type(trajectory).__name__}."
            )
        if trajectory.num_steps == 0:
            raise ValueError("the trajectory has no steps; record at least one training step.")
        self.trajectory = trajectory
        self.adaptive = nodes == "auto"
        self.nodes = AUTO_NODES[0] if self.adaptive else check_positive_int(nodes, "nodes")
        self.rule = check_choice(rule, "rule", RULES)
        self.rtol = check_positive(rtol, "rtol")
        self.max_depth = check_positive_int(max_depth, "max_depth", minimum=0)
        self.output = check_choice(output, "output", OUTPUTS)
        if output == "log_probs" and trajectory.header.loss != "cross_entropy":
            raise ValueError(
                "output='log_probs' needs a trajectory trained with loss='cross_entropy' (got "
                f"{trajectory.header.loss!r}); use output='logits'."
            )
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}.")
        self.dtype = dtype
        self.memory_budget = memory_budget
        self.show_progress = show_progress
        header = trajectory.header
        header.check_model(trajectory.model)
        self._names = header.names
        self._group_of = header.group_of
        self._shapes = {n: torch.Size(s) for n, s, *_ in header.params}
        self._num_params = header.num_parameters
        self._check_model_unchanged()
        self._net = self._compute_copy(trajectory.model)
        self._view = (
            _log_softmax_view(self._compute_copy(trajectory.model))
            if output == "log_probs"
            else self._net
        )
        rules = [r for s in range(trajectory.num_steps) for r in trajectory.step_rules(s)]
        self.structured = all(r.beta == 0.0 and not r.preconditioned for r in rules)
        self._has_decay = any(r.l2 != 0.0 or r.decoupled != 0.0 for r in rules)
        self._input_shape = tuple(trajectory.step(0).inputs.shape[1:])
        self._input_float = trajectory.step(0).inputs.is_floating_point()

    # ------------------------------------------------------------------ set-up helpers
    def _compute_copy(self, model: nn.Module) -> nn.Module:
        net = copy.deepcopy(model).to(self.dtype)
        static = {
            k: v.to(self.dtype) if v.is_floating_point() else v
            for k, v in self.trajectory.static().items()
        }
        net.load_state_dict(static, strict=False)
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    def _check_model_unchanged(self) -> None:
        """The model's forward at recorded weights must reproduce the recorded outputs."""
        traj = self.trajectory
        for s in sorted({0, traj.num_steps - 1}):
            rec = traj.step(s)
            with torch.no_grad():
                out = functional_call(traj.model, traj.state(s), (rec.inputs,))
            if out.shape != rec.outputs.shape:
                raise ValueError(
                    f"the model changed after recording: its output for step {s}'s batch has "
                    f"shape {tuple(out.shape)}, the recorded one {tuple(rec.outputs.shape)}."
                )
            err = float((out.double() - rec.outputs.double()).abs().max())
            eps = torch.finfo(rec.outputs.dtype).eps
            if err > math.sqrt(eps) * max(1.0, float(rec.outputs.abs().max())):
                raise ValueError(
                    "the model changed after recording: at the recorded weights of step "
                    f"{s} its outputs differ from the recorded ones by {err:.3g} (the forward "
                    "code, a frozen parameter or a buffer changed); rebuild the model exactly "
                    "as it was when the trajectory was recorded."
                )

    def _weights(self, s: int) -> Tensors:
        return {k: v.to(self.dtype) for k, v in self.trajectory.weights(s).items()}

    def _check_x(self, x_test: Any) -> torch.Tensor:
        x = torch.as_tensor(x_test)
        if x.ndim == 0 or tuple(x.shape[1:]) != self._input_shape:
            raise ValueError(
                f"x_test must have shape [T, {', '.join(map(str, self._input_shape))}] like the "
                f"training inputs, got {tuple(x.shape)}."
            )
        if x.shape[0] == 0:
            raise ValueError("x_test is empty; pass at least one test point.")
        if self._input_float:
            if not x.is_floating_point():
                raise TypeError(f"x_test must be floating like the training inputs, got {x.dtype}.")
            if not bool(torch.isfinite(x).all()):
                raise ValueError("x_test contains NaN or Inf.")
            return x.to(self.dtype)
        if x.is_floating_point():
            raise TypeError(f"x_test must hold integers like the training inputs, got {x.dtype}.")
        return x

    def _forward(self, net: nn.Module, w: Tensors, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return functional_call(net, w, (x,))

    def _factors(
        self, net: nn.Module, x: torch.Tensor, w: Tensors, cotangents: torch.Tensor | None = None
    ) -> Any:
        return jacobian_factors(net, x, weights=w, params=self._names, cotangents=cotangents)

    # ------------------------------------------------------------------ public API
    def attributions(self, x_test: Any) -> torch.Tensor:
        """``[T, N, O]``: training example ``i``'s contribution to output ``o`` at ``x_test[t]``,
        summed over all steps (zero for examples never in a batch)."""
        return self.decompose(x_test).attributions

    def predict(self, x_test: Any) -> torch.Tensor:
        """``[T, O]``: f(x; w_0) + all example contributions + weight decay + residual; equals
        the trained network up to the reported quadrature residual."""
        return self.decompose(x_test, attributions=False).prediction

    def kernel(self, x_test: Any, steps: int | Sequence[int] | None = None) -> torch.Tensor:
        """Path-kernel values ``K(x_t, x_i)[o, a]``.

        ``K_r(x, x_i) = (1 / B_r) <Gamma_r(x)_o, grad_w f_a(x_i; w_r)>`` for examples in step
        ``r``'s batch (zero otherwise), where ``Gamma_r`` is the path-averaged test gradient
        carried by the optimizer (``lr_r gbar_r(x)`` for plain SGD; momentum/Adam mix later
        steps in, docs/epk.md). Contributions are ``attributions = sum_r sum_a K_r[..., a]
        (-dloss/df_a)``.

        Args:
            x_test: ``[T, ...]`` test inputs.
            steps: None for the sum over all steps ``[T, N, O, O]``; an int for one step's
                kernel ``[T, N, O, O]``; a sequence of steps for ``[K, T, N, O, O]``.
        """
        S = self.trajectory.num_steps
        if steps is None:
            wanted: list[int] | None = None
        else:
            single = isinstance(steps, int) and not isinstance(steps, bool)
            wanted = [steps] if single else list(steps)
            for s in wanted:
                if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < S:
                    raise ValueError(f"steps must be step numbers in [0, {S}), got {s!r}.")
            if not wanted:
                raise ValueError("steps is empty; pass None for the sum over all steps.")
        d = self.decompose(x_test, attributions=False, kernel_steps=wanted or "sum")
        if steps is not None and isinstance(steps, int):
            return d.kernel[0]
        return d.kernel

    def verify(
        self,
        x_test: Any,
        *,
        attributions: bool = False,
        kernel_steps: str | list[int] | None = None,
    ) -> VerifyReport:
        """Compare :meth:`predict` with the network; report errors and the worst step.

        ``attributions`` and ``kernel_steps`` are passed to :meth:`decompose`, whose result is
        kept in ``report.details`` (so one pass gives the check and the explanation)."""
        x = self._check_x(x_test)
        d = self.decompose(x, attributions=attributions, kernel_steps=kernel_steps)
        scale = float(d.network.abs().max()) or 1.0
        err = float((d.prediction - d.network).abs().max())
        traj = self.trajectory
        with torch.no_grad():
            native = functional_call(
                traj.model,
                traj.state(traj.num_steps),
                (x.to(traj.step(0).inputs.dtype) if self._input_float else x,),
            )
        err_native = float((d.prediction - native.to(self.dtype)).abs().max())
        worst = int(d.step_residual.argmax())
        return VerifyReport(
            max_abs_error=err,
            max_rel_error=err / scale,
            worst_step=worst,
            worst_step_error=float(d.step_residual[worst]) / scale,
            max_abs_error_model_dtype=err_native,
            max_rel_error_model_dtype=err_native / scale,
            unconverged=d.unconverged,
            evaluations=int(d.evaluations.sum()),
            details=d,
        )

    def predictive_variance(
        self,
        x_test: Any,
        *,
        train_indices: Any = None,
        noise: float | None = None,
        nodes: int = 2,
    ) -> torch.Tensor:
        """``[T, O]`` GP posterior variance with the symmetric path kernel as covariance,
        conditioned on the training inputs (the paper's appendix A.6); see
        :func:`kernelens.epk.gp.path_gp_variance` for the arguments."""
        return path_gp_variance(self, x_test, train_indices=train_indices, noise=noise, nodes=nodes)

    # ------------------------------------------------------------------ single kernel machine
    @property
    def single_kernel_machine(self) -> bool:
        """Whether one kernel machine reproduces the outputs: every example's loss gradient
        ``dloss/df`` is the same at every step it was used (always true for
        ``output="log_probs"`` with cross-entropy, as long as each example keeps its label)."""
        return self.kernel_machine_weights() is not None

    def kernel_machine_weights(self) -> torch.Tensor | None:
        """``alpha [N, O] = -dloss/df`` per example when it is constant over training (so
        ``f(x) = f(x; w_0) + sum_i K(x, x_i) alpha_i + weight decay + residual`` with the summed
        :meth:`kernel`), else None. Examples never in a batch get zero rows."""
        traj = self.trajectory
        o = traj.num_outputs
        alpha = torch.zeros(traj.num_examples, o, dtype=self.dtype)
        seen = torch.zeros(traj.num_examples, dtype=torch.bool)
        for s in range(traj.num_steps):
            rec = traj.step(s)
            if self.output == "log_probs":
                c = -F.one_hot(rec.targets.long(), o).to(self.dtype)
            else:
                c = rec.output_grads.to(self.dtype)
            a = -c
            first = ~seen[rec.indices]
            alpha[rec.indices[first]] = a[first]
            if not torch.equal(alpha[rec.indices], a):
                return None
            seen[rec.indices] = True
        return alpha

    # ------------------------------------------------------------------ the computation
    def decompose(
        self,
        x_test: Any,
        *,
        attributions: bool = True,
        kernel_steps: str | list[int] | None = None,
    ) -> PathDecomposition:
        """Everything at once: initial output, per-example attributions (if ``attributions``),
        weight decay, residual, quadrature diagnostics and, with ``kernel_steps`` (``"sum"``
        or a list of steps), kernel values. Test points are processed in tiles that fit the
        memory budget."""
        x = self._check_x(x_test)
        t_total = x.shape[0]
        rows = tile_size(t_total, self._bytes_per_test_point(x, attributions, kernel_steps),
                         self.memory_budget)  # fmt: skip
        parts = [
            self._decompose_tile(x[k : k + rows], attributions, kernel_steps)
            for k in range(0, t_total, rows)
        ]
        if len(parts) == 1:
            return parts[0]
        cat = lambda name, dim=0: torch.cat([getattr(p, name) for p in parts], dim)  # noqa: E731
        return PathDecomposition(
            initial=cat("initial"),
            network=cat("network"),
            example_total=cat("example_total"),
            weight_decay=cat("weight_decay"),
            residual=cat("residual"),
            quadrature_residual=cat("quadrature_residual"),
            step_residual=torch.stack([p.step_residual for p in parts]).amax(0),
            evaluations=torch.stack([p.evaluations for p in parts]).sum(0),
            unconverged=sum(p.unconverged for p in parts),
            attributions=cat("attributions") if attributions else None,
            kernel=None
            if kernel_steps is None
            else cat("kernel", 0 if kernel_steps == "sum" else 1),
        )

    def _bytes_per_test_point(
        self, x: torch.Tensor, attributions: bool, kernel_steps: str | list[int] | None
    ) -> int:
        elem = element_size(self.dtype)
        n, o = self.trajectory.num_examples, self.trajectory.num_outputs
        probe = self._factors(self._view, x[:1], self._weights(0))
        per_point = 3 * _factor_bytes(probe)  # node factors alive plus contraction temporaries
        if not self.structured:
            per_point += 4 * o * self._num_params * elem  # gbar, H, G and a dense slice
        if attributions:
            per_point += n * o * elem
        if kernel_steps is not None:
            k = 1 if kernel_steps == "sum" else len(kernel_steps)
            per_point += k * n * o * o * elem
        return per_point

    def _decompose_tile(
        self, x: torch.Tensor, want_attr: bool, kernel_steps: str | list[int] | None
    ) -> PathDecomposition:
        traj = self.trajectory
        S, n, o, t_n = traj.num_steps, traj.num_examples, traj.num_outputs, x.shape[0]
        zeros = lambda *shape: torch.zeros(*shape, dtype=self.dtype)  # noqa: E731
        attr = zeros(t_n, n, o) if want_attr else None
        example_total = zeros(t_n, o)
        wd_term, res_term, quad = zeros(t_n, o), zeros(t_n, o), zeros(t_n, o)
        step_res, evals = zeros(S), torch.zeros(S, dtype=torch.int64)
        kernel = None
        if kernel_steps is not None:
            k = 1 if kernel_steps == "sum" else len(kernel_steps)
            kernel = zeros(k, t_n, n, o, o)
        node_log: list[list[tuple[float, float, torch.Tensor]]] = []

        w_first, w_last = self._weights(0), self._weights(S)
        initial = self._forward(self._view, w_first, x)
        network = self._forward(self._view, w_last, x)
        scale = torch.maximum(initial.abs().amax(1), network.abs().amax(1)).clamp_min(1e-300)
        buf_e: Tensors = {}
        buf_w: Tensors = {}
        w0, f0 = w_first, initial
        unconverged = 0
        start = self.nodes
        for s in progress(range(S), desc="epk steps", enable=self.show_progress):
            rec = traj.step(s)
            w1 = self._weights(s + 1)
            f1 = network if s == S - 1 else self._forward(self._view, w1, x)
            delta = {k: w1[k] - w0[k] for k in self._names}
            pre = self._preconditioners(rec)
            xb = rec.inputs.to(self.dtype) if self._input_float else rec.inputs
            c = rec.output_grads.to(self.dtype)
            e = vjp(self._net, xb, c / rec.batch_size, weights=w0, params=self._names)
            E = forward_update(rec.rules, self._group_of, buf_e, e, pre)
            Wd = self._weight_decay_update(rec, w0, buf_w, pre)
            R = {k: delta[k] - E[k] - Wd[k] for k in self._names}
            rows = [delta, R, Wd] if self._has_decay else [delta, R]
            tangents = {k: torch.stack([r[k] for r in rows]) for k in self._names}

            on_nodes: Callable | None = None
            log: list[tuple[float, float, torch.Tensor]] = []
            if self.structured:
                train = self._factors(self._net, xb, w0, cotangents=c)
                on_nodes = self._structured_step(
                    rec, w0, xb, train, attr, example_total, kernel, kernel_steps, s
                )
            node_log.append(log)
            proj, qres, count, unconv, next_start = self._integrate_step(
                x, w0, delta, f0, f1, scale, tangents, on_nodes, log, start
            )
            start = next_start
            res_term += proj[1]
            if self._has_decay:
                wd_term += proj[2]
            quad += qres
            step_res[s] = qres.abs().max() if qres.numel() else 0.0
            evals[s] = count
            unconverged += unconv
            w0, f0 = w1, f1

        if not self.structured:
            self._backward_pass(x, node_log, attr, example_total, kernel, kernel_steps)
        return PathDecomposition(
            initial=initial,
            network=network,
            example_total=example_total,
            weight_decay=wd_term,
            residual=res_term,
            quadrature_residual=quad,
            step_residual=step_res,
            evaluations=evals,
            unconverged=unconverged,
            attributions=attr if want_attr else None,
            kernel=None if kernel is None else (kernel[0] if kernel_steps == "sum" else kernel),
        )

    def _preconditioners(self, rec: Any) -> Tensors | None:
        if rec.preconditioners is None:
            return None
        return {k: v.to(self.dtype) for k, v in rec.preconditioners.items()}

    def _weight_decay_update(
        self, rec: Any, w0: Tensors, buffers: Tensors, pre: Tensors | None
    ) -> Tensors:
        """The decay part of the update: the law applied to ``l2 * w_s``, minus decoupled decay."""
        rules, group = rec.rules, self._group_of
        direction = {k: rules[group[k]].l2 * w0[k] for k in self._names}
        upd = forward_update(rules, group, buffers, direction, pre)
        return {k: upd[k] - rules[group[k]].decoupled * w0[k] for k in self._names}

    def _kernel_slot(self, kernel_steps: str | list[int] | None, s: int) -> int | None:
        if kernel_steps is None:
            return None
        if kernel_steps == "sum":
            return 0
        return kernel_steps.index(s) if s in kernel_steps else None

    def _structured_step(
        self,
        rec: Any,
        w0: Tensors,
        xb: torch.Tensor,
        train: Any,
        attr: torch.Tensor | None,
        example_total: torch.Tensor,
        kernel: torch.Tensor | None,
        kernel_steps: str | list[int] | None,
        s: int,
    ) -> Callable[[torch.Tensor, list], None]:
        """Plain SGD: the example part of step s is ``-alpha_g e_s`` per group, so each node's
        factors contract directly with the batch's (alpha-scaled) gradient factors."""
        b = rec.batch_size
        alphas = {k: rec.rules[self._group_of[k]].alpha for k in self._names}
        train.scale_(alphas)
        slot = self._kernel_slot(kernel_steps, s)
        jac = None
        if slot is not None:
            jac = self._factors(self._view, xb, w0).scale_(alphas)
        idx = rec.indices

        t_n = example_total.shape[0]

        def rows(values: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
            """``values`` for the points ``pts`` as rows of all ``t_n`` points (zeros elsewhere),
            so the scatter over examples is one in-place index_add_."""
            if pts.numel() == t_n:
                return values
            out = values.new_zeros(t_n, *values.shape[1:])
            out[pts] = values
            return out

        def on_nodes(pts: torch.Tensor, nodes: list) -> None:
            for _, q, fac in nodes:
                a = (-q / b) * contract(fac, train)[:, :, :, 0].transpose(1, 2)  # [P, b, O]
                example_total[pts] += a.sum(1)
                if attr is not None:
                    attr.index_add_(1, idx, rows(a, pts))
                if jac is not None:
                    k = (q / b) * contract(fac, jac).transpose(1, 2)  # [P, b, O, O]
                    kernel[slot].index_add_(1, idx, rows(k, pts))

        return on_nodes

    def _integrate_step(
        self,
        x: torch.Tensor,
        w0: Tensors,
        delta: Tensors,
        f0: torch.Tensor,
        f1: torch.Tensor,
        scale: torch.Tensor,
        tangents: Tensors,
        on_nodes: Callable | None,
        log: list,
        start_nodes: int,
    ) -> tuple[torch.Tensor, torch.Tensor, int, int, int]:
        """Quadrature of ``<gbar_s(x), v>`` for the stacked tangents ``v`` (row 0 = Delta_s).

        Each (interval, points) pair is integrated with the rule; points whose residual
        ``f(w(b)) - f(w(a)) - quadrature`` exceeds ``scale * max(rtol * length, noise)`` are
        re-integrated (``nodes="auto"``): with more nodes, then on both halves, down to
        ``max_depth``. Accepted nodes
        go to ``on_nodes(points, [(t, q, factors)])`` and to ``log`` as ``(t, q, points)``.
        Starts with ``start_nodes`` on [0, 1]. Returns the projections ``[M, T, O]``, the
        quadrature residual ``[T, O]``, the numbers of evaluations and of unconverged points,
        and the rule to start the next step with (:func:`_next_start`).
        """
        t_n, o = f0.shape
        m = next(iter(tangents.values())).shape[0]
        proj = torch.zeros(m, t_n, o, dtype=self.dtype)
        qres = torch.zeros(t_n, o, dtype=self.dtype)
        noise = 64 * torch.finfo(self.dtype).eps
        ends: dict[float, torch.Tensor] = {0.0: f0, 1.0: f1}
        evaluations, unconverged = 0, 0
        pending = [(DyadicInterval(0, 0), torch.arange(t_n), start_nodes)]
        needed = start_nodes  # the largest level-0 rule any point needed
        headroom = 0.0  # max error / tolerance of the points accepted with the first rule

        def point(t: float) -> Tensors:
            return {k: w0[k] + t * delta[k] for k in self._names}

        def f_at(t: float, pts: torch.Tensor) -> torch.Tensor:
            if t not in ends:
                ends[t] = torch.full((t_n, o), float("nan"), dtype=self.dtype)
            vals = ends[t]
            missing = pts[torch.isnan(vals[pts, 0])]
            if missing.numel():
                vals[missing] = self._forward(self._view, point(t), x[missing])
            return vals[pts]

        while pending:
            nxt = []
            for iv, pts, n_nodes in pending:
                xs = x[pts]
                est = torch.zeros(m, pts.numel(), o, dtype=self.dtype)
                node_facs = []
                for t, q in rule_nodes(self.rule, n_nodes, iv.a, iv.b):
                    fac = self._factors(self._view, xs, point(t))
                    est += q * dense_dot(tangents, fac)
                    node_facs.append((t, q, fac))
                evaluations += pts.numel() * len(node_facs)
                resid = f_at(iv.b, pts) - f_at(iv.a, pts) - est[0]
                err = resid.abs().amax(1)
                tol = scale[pts] * max(self.rtol * iv.length, noise)
                bad = err > tol
                if not self.adaptive or iv.level >= self.max_depth:
                    unconverged += int(bad.sum())
                    bad = torch.zeros_like(bad)
                ok = torch.nonzero(~bad)[:, 0]
                if iv.level == 0 and n_nodes == start_nodes and ok.numel():
                    headroom = max(headroom, float((err[ok] / tol[ok]).max()))
                if ok.numel():
                    sel = pts[ok]
                    proj[:, sel] += est[:, ok]
                    qres[sel] += resid[ok]
                    whole = ok.numel() == pts.numel()
                    accepted = [(t, q, fac if whole else fac.rows(ok)) for t, q, fac in node_facs]
                    if on_nodes is not None:
                        on_nodes(sel, accepted)
                    log.extend((t, q, sel) for t, q, _ in accepted)
                if bool(bad.any()):
                    rest = pts[bad]
                    if iv.level == 0 and n_nodes < AUTO_NODES[-1]:  # more nodes first
                        nxt.append((iv, rest, AUTO_NODES[AUTO_NODES.index(n_nodes) + 1]))
                    else:
                        nxt.extend((child, rest, AUTO_BISECT_NODES) for child in iv.children())
                    if iv.level == 0:
                        needed = max(needed, nxt[-1][2] if nxt[-1][0] == iv else AUTO_NODES[-1])
            pending = nxt
        following = _next_start(start_nodes, needed, headroom) if self.adaptive else start_nodes
        return proj, qres, evaluations, unconverged, following

    def _backward_pass(
        self,
        x: torch.Tensor,
        node_log: list[list[tuple[float, float, torch.Tensor]]],
        attr: torch.Tensor | None,
        example_total: torch.Tensor,
        kernel: torch.Tensor | None,
        kernel_steps: str | list[int] | None,
    ) -> None:
        """Momentum / Adam: ``G_r`` backwards over the steps, contracted with each batch."""
        traj = self.trajectory
        t_n, o = x.shape[0], traj.num_outputs
        acc = BackwardAccumulator(self._group_of)
        S = traj.num_steps
        w1 = self._weights(S)
        for r in progress(reversed(range(S)), total=S, desc="epk backward",
                          enable=self.show_progress):  # fmt: skip
            rec = traj.step(r)
            w0 = self._weights(r)
            delta = {k: w1[k] - w0[k] for k in self._names}
            gbar = {k: torch.zeros(t_n, o, *self._shapes[k], dtype=self.dtype) for k in self._names}
            for t, q, pts in node_log[r]:
                w_t = {k: w0[k] + t * delta[k] for k in self._names}
                dense = self._factors(self._view, x[pts], w_t).to_dense_dict()
                for k in self._names:
                    gbar[k][pts] += q * dense[k]
            G = acc.push(
                rec.rules,
                {k: v.reshape(t_n * o, *self._shapes[k]) for k, v in gbar.items()},
                self._preconditioners(rec),
            )
            del gbar
            b = rec.batch_size
            xb = rec.inputs.to(self.dtype) if self._input_float else rec.inputs
            train = self._factors(self._net, xb, w0, cotangents=rec.output_grads.to(self.dtype))
            a = dense_dot(G, train)[:, :, 0].reshape(t_n, o, b).transpose(1, 2) / b  # [T, b, O]
            example_total += a.sum(1)
            if attr is not None:
                attr.index_add_(1, rec.indices, a)
            slot = self._kernel_slot(kernel_steps, r)
            if slot is not None:
                jac = self._factors(self._view, xb, w0)
                k = -dense_dot(G, jac).reshape(t_n, o, b, o).transpose(1, 2) / b
                kernel[slot].index_add_(1, rec.indices, k)
            w1 = w0
