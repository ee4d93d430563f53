"""Gradient descent on the squared loss in the eigenbasis of a fixed kernel.

For the kernel ``K [P, P]`` (with ``diag_reg`` already added) and ``n = y.size`` outputs, the
residual ``r = f - y`` on the training set evolves mode by mode: along the eigenvector ``v_k``
with eigenvalue ``lambda_k`` it is multiplied by a factor ``rho_k(t)``, and a test output moves
by ``K_test_train v_k (rho_k(t) - 1) / lambda_k`` times the initial residual's component.

* continuous time (gradient flow, ``t`` in units of the learning rate):
  ``rho = exp(-lr lambda t / n)``;
* discrete gradient descent (``t`` steps): ``rho = (1 - lr lambda / n)^t``;
* heavy-ball momentum ``beta`` (torch.optim.SGD's ``momentum``, no dampening): a three-term
  linear recurrence per mode, raised to the power ``t`` exactly (see :func:`momentum_factors`).

``(rho - 1) / lambda`` is evaluated without cancellation (``expm1``, ``log1p``) and with its
exact ``lambda -> 0`` limit (``-lr t / n``), so no mode is divided by zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._checks import psd_tolerance

__all__ = ["KernelEigh", "flow_factors", "gd_factors", "momentum_factors"]


@dataclass(frozen=True)
class KernelEigh:
    """Eigendecomposition of a regularised PSD kernel ``K + reg I``.

    Attributes:
        evals: ``[P]`` ascending, negative round-off clipped to 0.
        evecs: ``[P, P]`` orthonormal columns.
        reg: the absolute diagonal regulariser that was added.
        lambda_max: the largest eigenvalue.
    """

    evals: torch.Tensor
    evecs: torch.Tensor
    reg: float
    lambda_max: float

    @classmethod
    def of(cls, k2: torch.Tensor, reg: float, name: str) -> KernelEigh:
        p = k2.shape[0]
        sym = 0.5 * (k2 + k2.T)
        evals, evecs = torch.linalg.eigh(sym + reg * torch.eye(p, dtype=k2.dtype, device=k2.device))
        lam_max = float(evals[-1])
        tol = psd_tolerance(k2.dtype, p) * max(abs(lam_max), 1e-300)
        lam_min_k = float(evals[0]) - reg
        if lam_min_k < -100 * tol:
            raise ValueError(
                f"{name} is not positive semi-definite: its smallest eigenvalue is "
                f"{lam_min_k:.3g} against a largest of {lam_max - reg:.3g} (round-off would "
                f"allow {-100 * tol:.3g}). An NTK / NNGP Gram is PSD; compute it in float64, "
                "check it is kernel(x_train, x_train), or symmetrise a noisy estimate."
            )
        return cls(evals.clamp_min(0.0), evecs, reg, lam_max)

    def check_invertible(self, name: str) -> None:
        """Raise unless every eigenvalue exceeds ``P eps lambda_max`` (needed for t = inf)."""
        p = self.evals.shape[0]
        tol = psd_tolerance(self.evals.dtype, p) * self.lambda_max
        if float(self.evals[0]) <= tol:
            raise ValueError(
                f"{name} (+ diag_reg) is singular to working precision (smallest eigenvalue "
                f"{float(self.evals[0]):.3g}, largest {self.lambda_max:.3g}), so t = infinity "
                "(t=None) has no unique limit on the test set; pass diag_reg > 0 or a finite t."
            )


def _inv_factor(rho_minus_1: torch.Tensor, evals: torch.Tensor, limit: torch.Tensor):
    """``(rho - 1) / lambda`` with the value ``limit`` where ``lambda == 0``."""
    zero = evals == 0
    safe = torch.where(zero, torch.ones_like(evals), evals)
    return torch.where(zero, limit, rho_minus_1 / safe)


def flow_factors(evals: torch.Tensor, t: torch.Tensor, lr: float, n: int):
    """Gradient flow: ``(rho - 1 [T, P], (rho - 1) / lambda [T, P])`` for times ``t [T]``."""
    s = (lr * t / n)[:, None]
    rm1 = torch.expm1(-evals[None, :] * s)
    return rm1, _inv_factor(rm1, evals[None, :], -s.expand_as(rm1))


def gd_factors(evals: torch.Tensor, t: torch.Tensor, lr: float, n: int):
    """Discrete gradient descent: ``rho = (1 - lr lambda / n)^t`` exactly, for ``t [T]`` steps.

    Returns ``(rho - 1 [T, P], (rho - 1) / lambda [T, P])``."""
    a = lr * evals[None, :] / n
    tt = t[:, None]
    small = a < 1  # 1 - a > 0: rho - 1 = expm1(t log1p(-a)) has no cancellation
    rm1_small = torch.expm1(tt * torch.log1p(-torch.where(small, a, torch.zeros_like(a))))
    rm1_large = torch.pow(1 - a, tt) - 1
    rm1 = torch.where(small, rm1_small, rm1_large)
    return rm1, _inv_factor(rm1, evals[None, :].expand_as(rm1), (-lr / n * tt).expand_as(rm1))


def momentum_factors(evals: torch.Tensor, t: torch.Tensor, lr: float, n: int, beta: float):
    """Heavy-ball steps ``b <- beta b + grad; theta <- theta - lr b`` (torch.optim.SGD with
    ``momentum=beta``), ``b_0 = 0``, in function space.

    Per mode, the state ``(rho, w, delta)`` (train residual factor, test velocity per unit of
    ``K_test_train v``, test displacement) starts at ``(1, 0, 0)`` and is multiplied by::

        [[1 - lr lam / n, -lr lam beta, 0],
         [1 / n,           beta,         0],
         [-lr / n,        -lr beta,      1]]

    each step; ``M^t`` is formed by repeated squaring (``torch.linalg.matrix_power``). Then
    ``delta = (rho - 1) / lambda`` including ``lambda = 0``. Returns ``(rho - 1, delta)``,
    each ``[T, P]``.
    """
    p = evals.shape[0]
    m = torch.zeros(p, 3, 3, dtype=evals.dtype, device=evals.device)
    m[:, 0, 0] = 1 - lr * evals / n
    m[:, 0, 1] = -lr * evals * beta
    m[:, 1, 0] = 1.0 / n
    m[:, 1, 1] = beta
    m[:, 2, 0] = -lr / n
    m[:, 2, 1] = -lr * beta
    m[:, 2, 2] = 1.0
    rm1, delta = [], []
    for steps in t.tolist():
        mt = torch.linalg.matrix_power(m, int(steps))  # [P, 3, 3]; state = mt @ (1, 0, 0)
        rm1.append(mt[:, 0, 0] - 1)
        delta.append(mt[:, 2, 0])
    return torch.stack(rm1), torch.stack(delta)


def stable_step(lam_max: float, lr: float, n: int, beta: float) -> bool:
    """Whether discrete (heavy-ball) descent converges on every mode: ``0 < lr lambda / n <
    2 (1 + beta)`` for the largest eigenvalue (``beta = 0`` without momentum)."""
    return lr * lam_max / n < 2 * (1 + beta)
