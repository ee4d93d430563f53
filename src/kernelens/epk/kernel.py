"""The Exact Path Kernel of a recorded training run: the :class:`ExactPathKernel` facade.

For each step ``s`` (weights ``w_s -> w_{s+1} = w_s + Delta_s``) the fundamental theorem of
calculus along the straight segment gives, exactly,

    f(x; w_{s+1}) - f(x; w_s) = <gbar_s(x), Delta_s>,
    gbar_s(x) = int_0^1 grad_w f(x; w_s + t Delta_s) dt.

The update splits exactly into an example part (a linear combination of per-example loss
gradients ``g_{r,i}`` taken at ``w_r``, ``r <= s``; :mod:`kernelens.epk.optim`), a weight-decay
part and a residual (floating-point rounding of the actual step), so every test output is the
initial output plus one contribution per training example plus two small terms. docs/epk.md
has the derivation. The work is done by :mod:`kernelens.epk.passes` (the schedules over the
steps) and :mod:`kernelens.epk.integration` (the kink-aware adaptive quadrature), reading the
network through :class:`~kernelens.epk.path.PathModel`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._memory import tile_size
from .._validation import check_choice, check_positive, check_positive_int
from .gp import path_gp_variance
from .integration import AUTO_NODES, PathIntegrator
from .passes import SCHEDULES as PASS_SCHEDULES
from .passes import KernelSteps, bytes_per_test_point, choose_schedule, decompose_tile
from .path import OUTPUTS, PathModel
from .quadrature import RULES
from .results import EPKVerificationError, PathDecomposition, VerifyReport
from .trajectory import Trajectory

__all__ = ["OUTPUTS", "SCHEDULES", "ExactPathKernel"]

#: How the example part is accumulated (see :mod:`kernelens.epk.passes`).
SCHEDULES = ("auto", *PASS_SCHEDULES)

_RECORD_HINT = (
    "record the training run instead: traj = kernelens.epk.fit(model, X, y, optimizer=..., "
    "epochs=..., batch_size=...) (or TrajectoryRecorder(model, optimizer, num_examples=N) and "
    "rec.step(x, y, indices) per batch), then ExactPathKernel(traj); a saved run loads with "
    "Trajectory.load(path, model)"
)


class ExactPathKernel:
    """A trained network, read as an exact kernel machine over its training examples.

    Args:
        trajectory: a recorded :class:`Trajectory` (its ``model`` must be the architecture
            it was recorded with).
        nodes: ``"auto"`` for adaptive Gauss-Legendre (2, 4, then 8 nodes per piece where the
            exact residual exceeds the tolerance, then further splitting with 4 nodes per
            part), or an int for a fixed rule per piece without refinement.
        rule: ``"gauss-legendre"`` or ``"midpoint"`` (the public EPK code's rule; for
            comparisons).
        rtol: per-step tolerance of the adaptive rule, relative to ``max |f(x)|`` per test
            point and to the interval length.
        max_depth: maximal refinement depth below a piece.
        locate_kinks: split each step's segment at the switch points of piecewise-linear
            activations (ReLU, LeakyReLU, ReLU6, Hardtanh, PReLU), found per test point, so
            that quadrature is exact on each piece (:mod:`kernelens.epk.kinks`).
        output: ``"logits"`` (the model's outputs; an ensemble of per-step kernels) or
            ``"log_probs"`` (log-softmax of the outputs; with cross-entropy the loss gradient
            ``-onehot(y)`` is constant, so one kernel machine reproduces them).
        dtype: compute dtype (float64 by default, whatever the model's dtype).
        memory_budget: bytes for the per-tile working set (None: 2 GiB, or $KERNELENS_MEMORY_BUDGET).
        show_progress: progress bar over steps (None: only on a terminal).
        schedule: ``"auto"``, ``"factored"`` or ``"backward"``: how the example part is
            accumulated (:mod:`kernelens.epk.passes`). Plain SGD is always factored; SGD with
            momentum or Nesterov is factored (a geometric window of batch factors) when that
            is estimated cheaper than the dense backward pass; Adam/AdamW always backward.
            Both give the same numbers to round-off.

    Results that miss the tolerance (unconverged intervals) or steps the recorded gradients do
    not explain (something changed the update behind the recorder) raise a ``UserWarning``
    naming the steps; :meth:`verify` raises :class:`~kernelens.epk.EPKVerificationError`.
    """

    def __init__(
        self,
        trajectory: Trajectory,
        *,
        nodes: int | str = "auto",
        rule: str = "gauss-legendre",
        rtol: float = 1e-12,
        max_depth: int = 8,
        locate_kinks: bool = True,
        output: str = "logits",
        dtype: torch.dtype = torch.float64,
        memory_budget: int | float | None = None,
        show_progress: bool | None = None,
        schedule: str = "auto",
    ) -> None:
        if isinstance(trajectory, nn.Module):
            raise TypeError(
                "trajectory must be a kernelens.epk.Trajectory, got a trained model "
                f"({type(trajectory).__name__}): the exact path kernel needs every training "
                f"step, not only the final weights; {_RECORD_HINT}."
            )
        if not isinstance(trajectory, Trajectory):
            raise TypeError(
                f"trajectory must be a kernelens.epk.Trajectory, got {type(trajectory).__name__}; "
                f"{_RECORD_HINT}."
            )
        if trajectory.num_steps == 0:
            raise ValueError("the trajectory has no steps; record at least one training step.")
        self.trajectory = trajectory
        self.adaptive = nodes == "auto"
        self.nodes = AUTO_NODES[0] if self.adaptive else check_positive_int(nodes, "nodes")
        self.rule = check_choice(rule, "rule", RULES)
        self.rtol = check_positive(rtol, "rtol")
        self.max_depth = check_positive_int(max_depth, "max_depth", minimum=0)
        self.locate_kinks = bool(locate_kinks)
        self.output = check_choice(output, "output", OUTPUTS)
        if output == "log_probs" and trajectory.header.loss != "cross_entropy":
            raise ValueError(
                "output='log_probs' needs a trajectory trained with loss='cross_entropy' (got "
                f"{trajectory.header.loss!r}); use output='logits'."
            )
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch dtype, got {dtype}.")
        self.dtype = dtype
        self.memory_budget = memory_budget
        self.show_progress = show_progress
        #: the network along the recorded path (weights, outputs, factors; used by gp.py)
        self.path = PathModel(trajectory, self.output, dtype)
        self._integrator = PathIntegrator(
            self.path,
            rule=self.rule,
            adaptive=self.adaptive,
            rtol=self.rtol,
            max_depth=self.max_depth,
            locate_kinks=self.locate_kinks,
            memory_budget=memory_budget,
        )
        steps = [trajectory.step_rules(s) for s in range(trajectory.num_steps)]
        self._has_decay = any(r.l2 != 0.0 or r.decoupled != 0.0 for st in steps for r in st)
        self._uniform = all(r == st[0] for st in steps for r in st)
        #: ``"factored"`` (contractions of factors, no parameter-space vector per test point)
        #: or ``"backward"`` (dense ``G_r`` per tile); see :mod:`kernelens.epk.passes`
        self.schedule = choose_schedule(
            self.path, steps, check_choice(schedule, "schedule", SCHEDULES), memory_budget
        )

    @property
    def structured(self) -> bool:
        """Whether the factored schedule is used (no parameter-space vector per test point)."""
        return self.schedule == "factored"

    def __repr__(self) -> str:
        nodes = "auto" if self.adaptive else self.nodes
        return (
            f"ExactPathKernel({self.trajectory.header.optimizer_class}, "
            f"steps={self.trajectory.num_steps}, examples={self.trajectory.num_examples}, "
            f"output={self.output!r}, nodes={nodes!r}, rtol={self.rtol:g}, "
            f"schedule={self.schedule}, dtype={self.dtype})"
        )

    # ------------------------------------------------------------------ public API
    def attributions(self, x_test: Any) -> torch.Tensor:
        """``[T, N, O]``: training example ``i``'s contribution to output ``o`` at ``x_test[t]``,
        summed over all steps (zero for examples never in a batch)."""
        return self.decompose(x_test).attributions

    def predict(self, x_test: Any) -> torch.Tensor:
        """``[T, O]``: f(x; w_0) + all example contributions + weight decay + residual; equals
        the trained network up to the reported quadrature residual."""
        return self.decompose(x_test, attributions=False).prediction

    def top_influences(
        self, x_test: Any, k: int, target: int | Sequence[int] | torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` training examples with the largest share of each test prediction.

        For test point ``t`` and class ``c_t`` (the predicted class, ``argmax f(x_t; w_S)``,
        or ``target``), with ``a_i`` example ``i``'s attribution to output ``c_t``, the share is
        ``a_i / sum_j |a_j|`` (positive: supports the class, negative: opposes it).

        Args:
            x_test: ``[T, ...]`` test inputs.
            k: how many examples per test point (at most ``num_examples``).
            target: None for the predicted class; an int for one class for every point; or
                ``[T]`` classes.

        Returns:
            ``(indices [T, k], shares [T, k])`` sorted by ``|share|``, largest first.
        """
        n, o = self.trajectory.num_examples, self.trajectory.num_outputs
        k = check_positive_int(k, "k")
        if k > n:
            raise ValueError(f"k={k} exceeds the number of training examples N={n}; pass k <= {n}.")
        x = self.path.check_x(x_test)
        t_n = x.shape[0]
        cls = None
        if target is not None:
            cls = torch.as_tensor(target)
            if cls.is_floating_point() or cls.dtype == torch.bool or cls.ndim > 1:
                raise TypeError(f"target must be an int or [T] integer classes, got {cls.dtype} "
                                f"of shape {tuple(cls.shape)}.")  # fmt: skip
            cls = cls.long().expand(t_n) if cls.ndim == 0 else cls.long()
            if cls.shape[0] != t_n:
                raise ValueError(f"target has {cls.shape[0]} classes but x_test has {t_n} rows.")
            if int(cls.min()) < 0 or int(cls.max()) >= o:
                raise ValueError(f"target classes must lie in [0, {o}), got {cls.tolist()[:10]}.")
        d = self.decompose(x)
        if cls is None:
            cls = d.network.argmax(1)
        a = d.attributions[torch.arange(t_n), :, cls]  # [T, N]
        total = a.abs().sum(1, keepdim=True)
        shares = torch.where(total > 0, a / total.clamp_min(1e-300), torch.zeros_like(a))
        order = shares.abs().argsort(dim=1, descending=True, stable=True)[:, :k]
        return order, shares.gather(1, order)

    def kernel(self, x_test: Any, steps: int | Sequence[int] | None = None) -> torch.Tensor:
        """Path-kernel values ``K(x_t, x_i)[o, a]``.

        ``K_r(x, x_i) = (s_r / B_r) <Gamma_r(x)_o, grad_w f_a(x_i; w_r)>`` for examples in step
        ``r``'s batch (zero otherwise), where ``Gamma_r`` is the path-averaged test gradient
        carried by the optimizer (``lr_r gbar_r(x)`` for plain SGD; momentum/Adam mix later
        steps in, docs/epk.md) and ``s_r`` the step's gradient scale (norm clipping; 1
        otherwise). Contributions are ``attributions = sum_r sum_a K_r[..., a] (-dloss/df_a)``.

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
        kernel_steps: KernelSteps = None,
        strict: bool = True,
    ) -> VerifyReport:
        """Compare :meth:`predict` with the network; report errors, the worst step and every
        step's unexplained residual ``max|R_s| / max|Delta_s|``.

        ``attributions`` and ``kernel_steps`` are passed to :meth:`decompose`, whose result is
        kept in ``report.details`` (so one pass gives the check and the explanation).

        Raises:
            EPKVerificationError: with ``strict`` (default), when a step's residual exceeds
                round-off (the recorded gradients do not explain the step) or the quadrature
                missed its tolerance; ``strict=False`` returns the report instead.
        """
        x = self.path.check_x(x_test)
        d = self._decompose(x, attributions, kernel_steps)
        scale = float(d.network.abs().max()) or 1.0
        err = float((d.prediction - d.network).abs().max())
        native = self.path.native_output(x, self.trajectory.num_steps)
        err_native = float((d.prediction - native.to(self.dtype)).abs().max())
        worst = int(d.step_residual.argmax())
        report = VerifyReport(
            max_abs_error=err,
            max_rel_error=err / scale,
            worst_step=worst,
            worst_step_error=float(d.step_residual[worst]) / scale,
            max_abs_error_model_dtype=err_native,
            max_rel_error_model_dtype=err_native / scale,
            step_unexplained=d.step_unexplained,
            max_unexplained=float(d.step_unexplained.max()),
            unexplained_steps=d.unexplained_steps,
            unconverged=d.unconverged,
            evaluations=int(d.evaluations.sum()),
            details=d,
        )
        if strict and not report.passed:
            raise EPKVerificationError(
                "the path decomposition is not exact: " + "; ".join(d.problems(self.rtol)) + ".",
                report,
            )
        return report

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
        kernel_steps: KernelSteps = None,
    ) -> PathDecomposition:
        """Everything at once: initial output, per-example attributions (if ``attributions``),
        weight decay, residual, quadrature diagnostics and, with ``kernel_steps`` (``"sum"``
        or a list of steps), kernel values. Test points are processed in tiles that fit the
        memory budget. Warns (``UserWarning``) where the result is not exact."""
        d = self._decompose(self.path.check_x(x_test), attributions, kernel_steps)
        problems = d.problems(self.rtol)
        if problems:
            warnings.warn(
                "ExactPathKernel: " + "; ".join(problems) + ".", UserWarning, stacklevel=2
            )
        return d

    def _decompose(
        self, x: torch.Tensor, attributions: bool, kernel_steps: KernelSteps
    ) -> PathDecomposition:
        t_total = x.shape[0]
        per_point = bytes_per_test_point(self.path, x, self.structured, attributions, kernel_steps)
        rows = tile_size(t_total, per_point, self.memory_budget)
        parts = [
            decompose_tile(
                self.path,
                self._integrator,
                x[k : k + rows],
                factored=self.structured,
                uniform=self._uniform,
                has_decay=self._has_decay,
                start_nodes=self.nodes,
                want_attr=attributions,
                kernel_steps=kernel_steps,
                show_progress=self.show_progress,
            )
            for k in range(0, t_total, rows)
        ]
        return PathDecomposition.concat(parts, kernel_steps)
