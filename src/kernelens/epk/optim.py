"""The optimizer algebra behind the Exact Path Kernel.

Every supported optimizer step, for one parameter group at step ``s``, is the linear law

.. code-block:: text

    d_s = e_s + l2_s * w_s                       # e_s: batch-mean loss gradient at w_s
    b_s = rho_s * b_{s-1} + kappa_s * d_s        # a running buffer, b_{-1} = 0
    Delta_s = -D_s * (alpha_s * d_s + beta_s * b_s) - decoupled_s * w_s

with scalars recorded per step and group (:class:`StepRule`) and ``D_s`` an elementwise
preconditioner (Adam's ``1 / (sqrt(v_s / (1 - beta2^t)) + eps)``; 1 for SGD). docs/epk.md
derives the scalars for ``torch.optim.SGD``, ``Adam`` and ``AdamW`` from their source.

Because the law is linear in ``e_s``, the update splits exactly into an *example* part (the
recursion applied to ``e_s``), a *weight-decay* part (applied to ``l2_s w_s`` plus the decoupled
decay) and whatever is left (floating-point rounding of the actual step); and the test-side
sums collapse into the backward recursion of :class:`BackwardAccumulator`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch

__all__ = [
    "SUPPORTED_OPTIMIZERS",
    "BackwardAccumulator",
    "StepRule",
    "capture_preconditioners",
    "capture_rules",
    "forward_update",
    "gradient_tolerance",
    "optimizer_kind",
    "roundoff_tolerance",
]

SUPPORTED_OPTIMIZERS = (
    "torch.optim.SGD (lr, momentum, dampening, nesterov, weight_decay), "
    "torch.optim.Adam and torch.optim.AdamW (lr, betas, eps, weight_decay, decoupled or L2 "
    "weight decay, amsgrad), each with maximize=False and differentiable=False, "
    "and any per-step learning-rate / momentum / beta schedule"
)

Tensors = Mapping[str, torch.Tensor]

#: An actual step may deviate from its recorded update law by this many ``eps`` (of the
#: weights' dtype) of the step's largest entry, plus 4 ``eps`` of the largest weight.
UPDATE_RTOL = 1000


#: A gradient may differ from the one implied by the recorded losses by this many ``eps`` of
#: its largest entry (round-off of two backward passes summing the batch in different orders).
GRAD_RTOL = 1000


def gradient_tolerance(param_max: float, overall_max: float, dtype: torch.dtype) -> float:
    """How far (max-abs, per entry) an honest ``p.grad`` may be from the gradient implied by the
    recorded loss gradients: ``GRAD_RTOL eps`` of the parameter's largest gradient entry plus
    ``64 eps`` of the largest over all parameters (cancellation within the batch sum). The
    recorder enforces it; the kernel propagates it through the update law."""
    eps = torch.finfo(dtype).eps
    return GRAD_RTOL * eps * param_max + 64 * eps * overall_max


def roundoff_tolerance(step_max: float, weight_max: float, dtype: torch.dtype) -> float:
    """How far (max-abs) an honest step of size ``step_max`` on weights of size ``weight_max``
    may differ from the recorded update law through rounding alone, in ``dtype``.

    The one rule for "beyond round-off" of the step itself: the recorder's update check and
    the kernel's unexplained residual ``|R_s|`` both use it."""
    eps = torch.finfo(dtype).eps
    return UPDATE_RTOL * eps * step_max + 4 * eps * weight_max


@dataclass(frozen=True)
class StepRule:
    """The scalars of one optimizer step for one parameter group (see the module docstring).

    Attributes:
        alpha: coefficient of the current direction ``d_s``.
        beta: coefficient of the buffer ``b_s``.
        rho: decay of the buffer, ``b_s = rho b_{s-1} + kappa d_s``.
        kappa: weight of ``d_s`` entering the buffer.
        l2: coupled (L2) weight decay added to the gradient.
        decoupled: decoupled decay, ``Delta_s`` gets ``-decoupled * w_s``.
        preconditioned: whether ``D_s`` (Adam's denominator) divides the step.
    """

    alpha: float
    beta: float
    rho: float
    kappa: float
    l2: float = 0.0
    decoupled: float = 0.0
    preconditioned: bool = False

    def to_dict(self) -> dict[str, float | bool]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, float | bool]) -> StepRule:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def _scalar(v: float | torch.Tensor) -> float:
    return float(v.item()) if isinstance(v, torch.Tensor) else float(v)


def optimizer_kind(optimizer: torch.optim.Optimizer) -> str:
    """``"sgd"`` or ``"adam"`` for a supported optimizer; a clear error for anything else."""
    kind = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.AdamW: "adam"}.get(
        type(optimizer)
    )
    if kind is None:
        raise TypeError(
            f"optimizer {type(optimizer).__name__} is not supported by the EPK recorder; "
            f"supported: {SUPPORTED_OPTIMIZERS}."
        )
    for k, group in enumerate(optimizer.param_groups):
        _check_group(group, k, kind)
    return kind


def _check_group(group: Mapping, k: int, kind: str) -> None:
    bad = []
    if group.get("maximize", False):
        bad.append("maximize=True (negate the loss instead)")
    if group.get("differentiable", False):
        bad.append("differentiable=True")
    if bad:
        raise ValueError(
            f"optimizer param group {k} uses unsupported option(s): {', '.join(bad)}; "
            f"supported: {SUPPORTED_OPTIMIZERS}."
        )


def capture_rules(
    optimizer: torch.optim.Optimizer, kind: str
) -> tuple[list[StepRule], list[dict[str, float | bool]]]:
    """The :class:`StepRule` of every param group for the step about to be taken.

    Call immediately before ``optimizer.step()`` (it reads the current hyper-parameters and
    whether the momentum buffers exist yet). Returns the rules and the raw hyper-parameters.
    """
    rules, raw = [], []
    for k, group in enumerate(optimizer.param_groups):
        _check_group(group, k, kind)
        states = [optimizer.state.get(p, {}) for p in group["params"]]
        lr = _scalar(group["lr"])
        wd = _scalar(group["weight_decay"])
        if kind == "sgd":
            mu, tau = _scalar(group["momentum"]), _scalar(group["dampening"])
            nesterov = bool(group["nesterov"])
            has_buf = {st.get("momentum_buffer") is not None for st in states}
            if len(has_buf) > 1:
                raise RuntimeError(
                    f"param group {k} mixes parameters with and without a momentum buffer; "
                    "record training from a fresh optimizer."
                )
            first = not has_buf.pop() if has_buf else True
            if mu == 0.0:  # torch skips the buffer entirely: it neither decays nor grows
                rule = StepRule(alpha=lr, beta=0.0, rho=1.0, kappa=0.0, l2=wd)
            else:
                rho, kappa = (0.0, 1.0) if first else (mu, 1.0 - tau)
                alpha, beta = (lr, lr * mu) if nesterov else (0.0, lr)
                rule = StepRule(alpha=alpha, beta=beta, rho=rho, kappa=kappa, l2=wd)
            raw.append(
                {"lr": lr, "weight_decay": wd, "momentum": mu, "dampening": tau,
                 "nesterov": nesterov}
            )  # fmt: skip
        else:
            beta1, beta2 = (_scalar(b) for b in group["betas"])
            steps = {int(_scalar(st["step"])) if "step" in st else 0 for st in states}
            if len(steps) > 1:
                raise RuntimeError(
                    f"param group {k} has parameters at different Adam step counts {steps}; "
                    "record training from a fresh optimizer."
                )
            t = steps.pop() + 1 if steps else 1
            decoupled = bool(group.get("decoupled_weight_decay", False))
            rule = StepRule(
                alpha=0.0,
                beta=lr / (1.0 - beta1**t),
                rho=beta1,
                kappa=1.0 - beta1,
                l2=0.0 if decoupled else wd,
                decoupled=lr * wd if decoupled else 0.0,
                preconditioned=True,
            )
            raw.append(
                {"lr": lr, "weight_decay": wd, "beta1": beta1, "beta2": beta2,
                 "eps": _scalar(group["eps"]), "step": t, "decoupled_weight_decay": decoupled,
                 "amsgrad": bool(group.get("amsgrad", False))}
            )  # fmt: skip
        rules.append(rule)
    return rules, raw


def capture_preconditioners(
    optimizer: torch.optim.Optimizer, params: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Adam's denominators ``sqrt(v_s) / sqrt(1 - beta2^t) + eps`` per parameter (``v_s`` the
    running maximum with ``amsgrad``), read from the optimizer state right after
    ``optimizer.step()`` with torch's own formula and dtype."""
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out = {}
    for name, p in params.items():
        group, state = group_of[id(p)], optimizer.state[p]
        beta2 = _scalar(group["betas"][1])
        t = int(_scalar(state["step"]))
        bc2_sqrt = (1.0 - beta2**t) ** 0.5
        v = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
        out[name] = (v.sqrt() / bc2_sqrt).add_(_scalar(group["eps"]))
    return out


def forward_update(
    rules: Sequence[StepRule],
    group_of: Mapping[str, int],
    buffers: dict[str, torch.Tensor],
    direction: Tensors,
    preconditioners: Tensors | None,
) -> dict[str, torch.Tensor]:
    """Advance ``buffers`` in place by one step of the linear law and return the update.

    ``direction`` is the part of ``d_s`` being propagated (e.g. the batch gradient ``e_s``, or
    ``l2_s * w_s``); returns ``-D_s * (alpha d + beta b_s)`` per parameter (decoupled decay is
    not included: it does not pass through the buffer).
    """
    update = {}
    for name, d in direction.items():
        r = rules[group_of[name]]
        buf = buffers.get(name)
        new = r.kappa * d if buf is None else r.rho * buf + r.kappa * d
        buffers[name] = new
        u = r.alpha * d + r.beta * new
        if r.preconditioned:
            if preconditioners is None:
                raise ValueError("this step is preconditioned but no preconditioners were given.")
            u = u / preconditioners[name].to(u.dtype)
        update[name] = -u
    return update


class BackwardAccumulator:
    """Test-side accumulation that makes momentum and Adam linear in the number of steps.

    With ``u_s = -gbar_s / D_s`` (the path-averaged output gradient of step ``s``, scaled by the
    preconditioner) the example part of ``sum_s <gbar_s, Delta_s>`` equals
    ``sum_r <G_r, e_r>`` where, going backwards from the last step,

    .. code-block:: text

        H_r = beta_r u_r + rho_{r+1} H_{r+1}        (H after the last step is 0)
        G_r = alpha_r u_r + kappa_r H_r

    Feed steps in decreasing order with :meth:`push`; it returns ``G_r`` per parameter with
    the leading (test-point, output) axes of ``gbar``.
    """

    def __init__(self, group_of: Mapping[str, int]) -> None:
        self.group_of = dict(group_of)
        self._h: dict[str, torch.Tensor] | None = None
        self._next_rules: Sequence[StepRule] | None = None

    def push(
        self,
        rules: Sequence[StepRule],
        gbar: Tensors,
        preconditioners: Tensors | None,
    ) -> dict[str, torch.Tensor]:
        """Step ``r``'s rules and ``gbar_r`` (per parameter ``[M, *shape]``) -> ``G_r``.

        ``gbar``'s tensors are consumed (overwritten in place, saving a pass over memory)."""
        g_out, h_new = {}, {}
        for name, gb in gbar.items():
            r = rules[self.group_of[name]]
            u = gb.neg_()
            if r.preconditioned:
                if preconditioners is None:
                    raise ValueError("a preconditioned step needs its preconditioners.")
                u.div_(preconditioners[name].to(u.dtype))
            h = u * r.beta
            if self._h is not None and self._next_rules is not None:
                h.add_(self._h[name], alpha=self._next_rules[self.group_of[name]].rho)
            h_new[name] = h
            g = h * r.kappa
            if r.alpha != 0.0:
                g.add_(u, alpha=r.alpha)
            g_out[name] = g
        self._h, self._next_rules = h_new, rules
        return g_out
