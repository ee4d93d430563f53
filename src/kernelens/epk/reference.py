"""A slow, independent float64 reference for the Exact Path Kernel (for validation only).

Everything here is computed the plain way, sharing no algebra with
:class:`~kernelens.epk.ExactPathKernel`: per-example gradients by a Python loop of autograd
calls, the per-example part of every update by *replaying torch's own optimizer* (SGD) or
Adam's moment recursion written out directly on one row per training example, and the path
integral by composite Gauss-Legendre on Jacobians built one output at a time. Cost grows like
``steps x (test points x outputs + batch) x backward``, so use it on toy problems.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from .trajectory import Trajectory

__all__ = ["ReferenceResult", "reference_path_decomposition"]


@dataclass
class ReferenceResult:
    """Reference quantities (float64) for test points ``[T, ...]``.

    Attributes:
        initial: ``[T, O]`` f(x; w_0).
        network: ``[T, O]`` f(x; w_S).
        attributions: ``[T, N, O]`` each training example's contribution.
        non_example: ``[T, O]`` the rest of the path integral (weight decay, rounding).
        step_changes: ``[S, T, O]`` f(x; w_{s+1}) - f(x; w_s).
        step_integrals: ``[S, T, O]`` the quadrature of <gbar_s(x), Delta_s>.
    """

    initial: torch.Tensor
    network: torch.Tensor
    attributions: torch.Tensor
    non_example: torch.Tensor
    step_changes: torch.Tensor
    step_integrals: torch.Tensor

    @property
    def prediction(self) -> torch.Tensor:
        """``[T, O]`` initial + summed attributions + non-example part."""
        return self.initial + self.attributions.sum(1) + self.non_example


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def reference_path_decomposition(
    trajectory: Trajectory,
    x_test: torch.Tensor,
    *,
    output: str = "logits",
    nodes: int = 12,
    panels: int = 1,
    cotangent: int | None = None,
    steps: list[int] | None = None,
    breakpoints: Callable[[int, torch.Tensor], list[float]] | None = None,
) -> ReferenceResult:
    """Decompose f(x; w_S) - f(x; w_0) into per-example contributions, the slow way.

    Args:
        trajectory: a recorded trajectory (single or several param groups).
        x_test: ``[T, ...]`` test inputs.
        output: ``"logits"`` (the model's outputs) or ``"log_probs"`` (their log-softmax).
        nodes, panels: composite Gauss-Legendre with ``panels`` equal panels of ``nodes``.
        cotangent: None for the recorded loss gradients; an output index ``a`` to use
            ``-e_a`` instead, which turns the attributions into summed kernel values
            ``K(x, x_i)[:, a]``.
        steps: only inject the training gradients of these steps (per-step kernels).
        breakpoints: ``(step, x_test[t]) -> sorted kinks in (0, 1)``; each panel is then split
            at them (for piecewise-linear networks whose kinks the caller knows analytically).
    """
    model = copy.deepcopy(trajectory.model).double()
    names = trajectory.param_names
    group_of = trajectory.header.group_of
    n_groups = trajectory.header.num_groups
    static = {k: v.double() if v.is_floating_point() else v for k, v in trajectory.static().items()}
    n, o = trajectory.num_examples, trajectory.num_outputs
    x_test = x_test.double() if x_test.is_floating_point() else x_test

    def f(x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
        out = functional_call(model, {**static, **w}, (x,))
        return F.log_softmax(out, dim=1) if output == "log_probs" else out

    def weights(s: int) -> dict[str, torch.Tensor]:
        return {k: v.double() for k, v in trajectory.weights(s).items()}

    def grad_of(x: torch.Tensor, w: dict[str, torch.Tensor], v: torch.Tensor) -> torch.Tensor:
        wr = {k: t.detach().clone().requires_grad_(True) for k, t in w.items()}
        out = f(x.unsqueeze(0), wr)[0]
        grads = torch.autograd.grad(out @ v, [wr[k] for k in names], allow_unused=True)
        return _flat([torch.zeros_like(wr[k]) if g is None else g for k, g in zip(names, grads)])

    sizes = [int(np.prod(trajectory.weights(0)[k].shape)) for k in names]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    group_cols = [
        torch.cat([torch.arange(offsets[j], offsets[j + 1]) for j, k in enumerate(names)
                   if group_of[k] == g])
        for g in range(n_groups)
    ]  # fmt: skip
    # One "dummy parameter" row per training example and group: the optimizer (or Adam's
    # recursion) applied to that example's gradients alone gives its share of every update.
    rows = [torch.zeros(n, len(c), dtype=torch.float64) for c in group_cols]
    replay = None
    if trajectory.header.optimizer == "sgd":
        replay = [torch.optim.SGD([torch.nn.Parameter(r)], lr=1.0) for r in rows]
    moments = [torch.zeros_like(r) for r in rows]

    x0 = x_test
    gl_x, gl_w = np.polynomial.legendre.leggauss(nodes)

    def rule(cuts: list[float]) -> list[tuple[float, float]]:
        ends = sorted({*(p / panels for p in range(panels + 1)), *cuts})
        return [(a + (b - a) * (xi + 1) / 2, (b - a) * wi / 2)
                for a, b in itertools.pairwise(ends) for xi, wi in zip(gl_x, gl_w)]  # fmt: skip

    t_n = x0.shape[0]
    attributions = torch.zeros(t_n, n, o, dtype=torch.float64)
    non_example = torch.zeros(t_n, o, dtype=torch.float64)
    S = trajectory.num_steps
    changes = torch.zeros(S, t_n, o, dtype=torch.float64)
    integrals = torch.zeros(S, t_n, o, dtype=torch.float64)
    eye = torch.eye(o, dtype=torch.float64)
    w_now = weights(0)
    initial = f(x0, w_now).detach()
    for s in range(S):
        rec = trajectory.step(s)
        w_next = weights(s + 1)
        b = rec.batch_size
        xb = rec.inputs.double() if rec.inputs.is_floating_point() else rec.inputs
        per_ex = torch.zeros(n, int(offsets[-1]), dtype=torch.float64)
        if steps is None or s in steps:
            for j, i in enumerate(rec.indices.tolist()):
                if cotangent is not None:
                    v = -eye[cotangent]
                elif output == "log_probs":
                    v = -eye[int(rec.targets[j])]
                else:
                    v = rec.output_grads[j].double()
                per_ex[i] += rec.grad_scale * grad_of(xb[j], w_now, v) / b
        contrib = torch.zeros_like(per_ex)
        for g, cols in enumerate(group_cols):
            hyper = rec.hyper[g]
            if replay is not None:
                opt = replay[g]
                grp = opt.param_groups[0]
                grp.update(lr=hyper["lr"], momentum=hyper["momentum"],
                           dampening=hyper["dampening"], nesterov=hyper["nesterov"])  # fmt: skip
                p = grp["params"][0]
                before = p.detach().clone()
                p.grad = per_ex[:, cols].clone()
                opt.step()
                contrib[:, cols] = p.detach() - before
            else:
                beta1, t = hyper["beta1"], hyper["step"]
                moments[g] = beta1 * moments[g] + (1 - beta1) * per_ex[:, cols]
                denom = _flat([rec.preconditioners[k].double() for k in names
                               if group_of[k] == g])  # fmt: skip
                contrib[:, cols] = -(hyper["lr"] / (1 - beta1**t)) * moments[g] / denom
        delta = _flat([w_next[k] - w_now[k] for k in names])
        for ti in range(t_n):
            gbar = torch.zeros(o, int(offsets[-1]), dtype=torch.float64)
            cuts = [] if breakpoints is None else breakpoints(s, x0[ti])
            for tau, q in rule(cuts):
                w_tau = {k: w_now[k] + tau * (w_next[k] - w_now[k]) for k in names}
                for a in range(o):
                    gbar[a] += q * grad_of(x0[ti], w_tau, eye[a])
            attributions[ti] += contrib @ gbar.T
            integrals[s, ti] = gbar @ delta
            if cotangent is None and steps is None:
                non_example[ti] += gbar @ (delta - contrib.sum(0))
        changes[s] = f(x0, w_next).detach() - f(x0, w_now).detach()
        w_now = w_next
    return ReferenceResult(
        initial=initial,
        network=f(x0, w_now).detach(),
        attributions=attributions,
        non_example=non_example,
        step_changes=changes,
        step_integrals=integrals,
    )
