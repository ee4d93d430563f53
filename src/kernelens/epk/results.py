"""What the Exact Path Kernel returns: :class:`PathDecomposition` and :class:`VerifyReport`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["EPKVerificationError", "PathDecomposition", "VerifyReport"]


def _steps_text(steps: list[int] | tuple[int, ...]) -> str:
    shown = ", ".join(map(str, list(steps)[:10]))
    return shown + (f", ... ({len(steps)} steps)" if len(steps) > 10 else "")


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
        step_unconverged: ``[S]`` (test point, interval) pairs of each step accepted above the
            tolerance.
        step_unexplained: ``[S]`` ``max|R_s| / max|Delta_s|``: the share of each step that the
            recorded loss gradients, the optimizer law and weight decay do not explain.
        unexplained_steps: the steps whose ``R_s`` exceeds round-off in the weights' dtype
            (something changed the step behind the recorder's back; attributions are then not
            exact).
        evaluations: ``[S]`` Jacobian evaluations (test point x node) per step.
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
    step_unconverged: torch.Tensor
    step_unexplained: torch.Tensor
    unexplained_steps: tuple[int, ...]
    evaluations: torch.Tensor
    attributions: torch.Tensor | None = None
    kernel: torch.Tensor | None = None

    @property
    def prediction(self) -> torch.Tensor:
        """``[T, O]`` f(x; w_0) + examples + weight decay + residual."""
        return self.initial + self.example_total + self.weight_decay + self.residual

    @property
    def unconverged(self) -> int:
        """(test point, interval) pairs accepted above the tolerance, over all steps."""
        return int(self.step_unconverged.sum())

    @classmethod
    def concat(cls, parts: list[PathDecomposition], kernel_steps: str | list[int] | None):
        """The decomposition of all test points from the tiles ``parts`` (in order)."""
        if len(parts) == 1:
            return parts[0]

        def cat(name: str, dim: int = 0) -> torch.Tensor:
            return torch.cat([getattr(p, name) for p in parts], dim)

        first = parts[0]
        return cls(
            initial=cat("initial"),
            network=cat("network"),
            example_total=cat("example_total"),
            weight_decay=cat("weight_decay"),
            residual=cat("residual"),
            quadrature_residual=cat("quadrature_residual"),
            step_residual=torch.stack([p.step_residual for p in parts]).amax(0),
            step_unconverged=torch.stack([p.step_unconverged for p in parts]).sum(0),
            step_unexplained=first.step_unexplained,  # a property of the steps, not the points
            unexplained_steps=first.unexplained_steps,
            evaluations=torch.stack([p.evaluations for p in parts]).sum(0),
            attributions=None if first.attributions is None else cat("attributions"),
            kernel=None
            if kernel_steps is None
            else cat("kernel", 0 if kernel_steps == "sum" else 1),
        )

    def problems(self, rtol: float) -> list[str]:
        """Why this result is not exact, one sentence each (empty when it is)."""
        out = []
        if self.unexplained_steps:
            worst = max(float(self.step_unexplained[s]) for s in self.unexplained_steps)
            out.append(
                f"the recorded loss gradients do not explain step(s) "
                f"{_steps_text(self.unexplained_steps)} (unexplained residual |R_s|/|Delta_s| "
                f"up to {worst:.3g}, beyond round-off): something changed the updates behind "
                "the recorder (a weight clamp, a patched optimizer, check_updates=False), so "
                "the attributions are not exact; record without it"
            )
        if self.unconverged:
            steps = torch.nonzero(self.step_unconverged)[:, 0].tolist()
            scale = float(self.network.abs().max()) or 1.0
            est = float(self.step_residual[steps].max()) / scale
            out.append(
                f"the quadrature missed rtol={rtol:g} at step(s) {_steps_text(steps)} "
                f"(error estimate {est:.3g} relative to max|f|, {self.unconverged} unconverged "
                "intervals; pass nodes='auto', a larger max_depth, or keep locate_kinks=True)"
            )
        return out

    def __repr__(self) -> str:
        t, o = self.initial.shape
        parts = [f"T={t}", f"O={o}", f"steps={self.step_residual.numel()}"]
        if self.attributions is not None:
            parts.append(f"attributions={list(self.attributions.shape)}")
        if self.kernel is not None:
            parts.append(f"kernel={list(self.kernel.shape)}")
        scale = float(self.network.abs().max()) or 1.0
        gap = float((self.prediction - self.network).abs().max()) / scale
        parts += [f"rel_error={gap:.2g}", f"unconverged={self.unconverged}"]
        if self.unexplained_steps:
            parts.append(f"unexplained_steps={list(self.unexplained_steps)[:5]}")
        return f"PathDecomposition({', '.join(parts)})"


@dataclass
class VerifyReport:
    """How exactly the path decomposition reproduces the trained network.

    Attributes:
        max_abs_error: ``max |prediction - network|`` (compute dtype, e.g. float64).
        max_rel_error: ``max_abs_error / max |network|``.
        worst_step: the step with the largest quadrature residual; ``worst_step_error`` its
            size relative to ``max |network|``.
        max_abs_error_model_dtype, max_rel_error_model_dtype: against the same output view
            evaluated by the model in its own dtype (for float32 models this includes float32
            rounding of the forward pass).
        step_unexplained: ``[S]`` each step's unexplained residual ``max|R_s| / max|Delta_s|``.
        max_unexplained: its maximum.
        unexplained_steps: steps whose residual exceeds round-off (see
            :class:`PathDecomposition`).
        unconverged: (test point, interval) pairs accepted above the tolerance.
        evaluations: total Jacobian evaluations (test point x node).
        passed: no unexplained step and no unconverged interval.
    """

    max_abs_error: float
    max_rel_error: float
    worst_step: int
    worst_step_error: float
    max_abs_error_model_dtype: float
    max_rel_error_model_dtype: float
    step_unexplained: torch.Tensor
    max_unexplained: float
    unexplained_steps: tuple[int, ...]
    unconverged: int
    evaluations: int
    details: PathDecomposition = field(repr=False)

    @property
    def passed(self) -> bool:
        return not self.unexplained_steps and self.unconverged == 0

    def __repr__(self) -> str:
        return (
            f"VerifyReport(passed={self.passed}, max_rel_error={self.max_rel_error:.3g}, "
            f"max_rel_error_model_dtype={self.max_rel_error_model_dtype:.3g}, "
            f"max_unexplained={self.max_unexplained:.3g}, worst_step={self.worst_step}, "
            f"unconverged={self.unconverged}, evaluations={self.evaluations})"
        )


class EPKVerificationError(RuntimeError):
    """``ExactPathKernel.verify`` found the decomposition not exact; ``.report`` has details."""

    def __init__(self, message: str, report: VerifyReport) -> None:
        super().__init__(message)
        self.report = report
