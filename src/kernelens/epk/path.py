"""The trained network along its recorded path, in the compute dtype: :class:`PathModel`.

Everything the EPK computes is read through this one object: the weights ``w_s`` of every
step, the network's outputs in the chosen output view, and the Jacobian factors of the
:mod:`kernelens.ntk` engine. :class:`~kernelens.epk.ExactPathKernel` and the GP variance use it.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..ntk import Factors, jacobian_factors
from .trajectory import StepRecord, Trajectory

__all__ = ["OUTPUTS", "PathModel", "apply_output"]

#: Output views: the model's outputs, or their log-softmax (cross-entropy only).
OUTPUTS = ("logits", "log_probs")

Tensors = dict[str, torch.Tensor]


def apply_output(out: torch.Tensor, output: str) -> torch.Tensor:
    """The output view of raw model outputs ``[B, O]`` (the one place it is defined)."""
    return F.log_softmax(out, dim=-1) if output == "log_probs" else out


class PathModel:
    """The recorded network in ``dtype``, with weights, outputs and factors along the path.

    Args:
        trajectory: the recorded run (its ``model`` must be the recorded architecture).
        output: ``"logits"`` or ``"log_probs"`` (see :data:`OUTPUTS`).
        dtype: compute dtype.
    """

    def __init__(self, trajectory: Trajectory, output: str, dtype: torch.dtype) -> None:
        header = trajectory.header
        header.check_model(trajectory.model)
        self.trajectory = trajectory
        self.output = output
        self.dtype = dtype
        self.names: list[str] = header.names
        self.group_of: dict[str, int] = header.group_of
        self.shapes = {n: torch.Size(s) for n, s, *_ in header.params}
        self.param_dtypes = {n: getattr(torch, d.split(".")[-1]) for n, _, d, _ in header.params}
        self.num_params = header.num_parameters
        first = trajectory.step(0).inputs
        self.input_shape = tuple(first.shape[1:])
        self.input_float = first.is_floating_point()
        self._input_dtype = first.dtype
        self.check_model_unchanged()
        #: the raw network (training-side gradients: the loss gradients are w.r.t. its outputs)
        self.net = self._compute_copy()
        #: the network in the output view (test side)
        self.view = self.net
        if output == "log_probs":
            self.view = self._compute_copy()
            self.view.register_forward_hook(lambda _m, _i, out: apply_output(out, "log_probs"))

    def _compute_copy(self) -> nn.Module:
        net = copy.deepcopy(self.trajectory.model).to(self.dtype)
        static = {
            k: v.to(self.dtype) if v.is_floating_point() else v
            for k, v in self.trajectory.static().items()
        }
        net.load_state_dict(static, strict=False)
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    def check_model_unchanged(self) -> None:
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

    # ------------------------------------------------------------------ inputs
    def check_x(self, x_test: Any, name: str = "x_test") -> torch.Tensor:
        """``x_test`` as a ``[T, ...]`` tensor like the training inputs (compute dtype)."""
        x = torch.as_tensor(x_test)
        if x.ndim == 0 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"{name} must have shape [T, {', '.join(map(str, self.input_shape))}] like the "
                f"training inputs, got {tuple(x.shape)}."
            )
        if x.shape[0] == 0:
            raise ValueError(f"{name} is empty; pass at least one test point.")
        if self.input_float:
            if not x.is_floating_point():
                raise TypeError(f"{name} must be floating like the training inputs, got {x.dtype}.")
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"{name} contains NaN or Inf.")
            return x.to(self.dtype)
        if x.is_floating_point():
            raise TypeError(f"{name} must hold integers like the training inputs, got {x.dtype}.")
        return x

    def batch_inputs(self, rec: StepRecord) -> torch.Tensor:
        """Step ``rec``'s training inputs in the compute dtype."""
        return rec.inputs.to(self.dtype) if self.input_float else rec.inputs

    # ------------------------------------------------------------------ along the path
    def weights(self, step: int) -> Tensors:
        """Trained parameters ``w_step`` in the compute dtype."""
        return {k: v.to(self.dtype) for k, v in self.trajectory.weights(step).items()}

    def preconditioners(self, rec: StepRecord) -> Tensors | None:
        """Adam's recorded denominators of step ``rec`` in the compute dtype, else None."""
        if rec.preconditioners is None:
            return None
        return {k: v.to(self.dtype) for k, v in rec.preconditioners.items()}

    def output_grads(self, rec: StepRecord) -> torch.Tensor:
        """``[B, O]`` the cotangents the step's gradient was built from: the recorded
        ``dloss/df`` times the step's gradient scale (norm clipping), compute dtype."""
        return rec.output_grads.to(self.dtype) * rec.grad_scale

    def forward(self, w: Tensors, x: torch.Tensor, *, view: bool = True) -> torch.Tensor:
        """``[T, O]`` outputs at weights ``w`` (the output view, or the raw network)."""
        with torch.no_grad():
            return functional_call(self.view if view else self.net, w, (x,))

    def factors(
        self,
        x: torch.Tensor,
        w: Tensors,
        *,
        cotangents: torch.Tensor | None = None,
        view: bool = True,
    ) -> Factors:
        """Jacobian factors of the output view (or, ``view=False``, the raw network) at ``w``
        for inputs ``x`` ``[T, ...]``, optionally contracted with ``cotangents`` ``[T, O]``."""
        net = self.view if view else self.net
        return jacobian_factors(net, x, weights=w, params=self.names, cotangents=cotangents)

    def native_output(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """``[T, O]`` the output view of the user's model in its own dtype at ``w_step``."""
        traj = self.trajectory
        xn = x.to(self._input_dtype) if self.input_float else x
        with torch.no_grad():
            out = functional_call(traj.model, traj.state(step), (xn,))
        return apply_output(out, self.output)

    def __repr__(self) -> str:
        return (
            f"PathModel(output={self.output!r}, dtype={self.dtype}, "
            f"parameters={self.num_params}, steps={self.trajectory.num_steps})"
        )
