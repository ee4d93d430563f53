"""Gaussian expectations of elementwise nonlinearities: the kernel rules of activation layers.

For a centred Gaussian pair ``(u, v)`` with ``E[u^2] = q1``, ``E[v^2] = q2``, ``E[uv] = c``, each
activation gives ``K = E[phi(u) phi(v)]``, ``Kdot = E[phi'(u) phi'(v)]`` (which multiplies the
NTK) and the mean ``E[phi(u)]``, elementwise over broadcastable tensors. Closed forms where they
exist; Gauss-Hermite quadrature (:class:`Quadrature`) for any other function.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["ABReluRule", "ErfRule", "GeluRule", "QuadratureRule"]

Pair = tuple[torch.Tensor, torch.Tensor | None]


def _sqrt0(x: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(torch.clamp(x, min=0))


class ABReluRule:
    """``phi(x) = a x`` for ``x < 0`` and ``b x`` for ``x > 0`` (the arc-cosine kernels).

    With ``s = sqrt(q1 q2 - c^2)`` and ``theta = atan2(s, c)`` (the angle between the inputs):
    ``Kdot = (a^2 + b^2) / 2 - (a - b)^2 theta / (2 pi)`` and
    ``K = (a - b)^2 s / (2 pi) + Kdot c``; ReLU (a = 0, b = 1) gives
    ``(s + (pi - theta) c) / (2 pi)`` and ``(pi - theta) / (2 pi)``.
    """

    def __init__(self, a: float, b: float) -> None:
        self.a, self.b = float(a), float(b)

    def pair(self, c, q1, q2, dot: bool) -> Pair:
        s = _sqrt0(q1 * q2 - c * c)
        theta = torch.atan2(s, c)
        factor = (self.a - self.b) ** 2 / (2 * math.pi)
        kdot = (self.a**2 + self.b**2) / 2 - factor * theta
        return factor * s + kdot * c, kdot if dot else None

    def mean(self, q):
        # phi = b relu(x) - a relu(-x) and E relu(u) = sqrt(q / (2 pi))
        return (self.b - self.a) * torch.sqrt(q / (2 * math.pi))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, self.b * x, self.a * x)


class ErfRule:
    """``phi(x) = a erf(b x) + c``: ``K = a^2 (2 / pi) asin(2 b^2 c / sqrt(P)) + c^2`` with
    ``P = (1 + 2 b^2 q1)(1 + 2 b^2 q2)``, and ``Kdot = a^2 b^2 (4 / pi) / sqrt(P - 4 b^4 c^2)``."""

    def __init__(self, a: float, b: float, c: float) -> None:
        self.a, self.b, self.c = float(a), float(b), float(c)

    def pair(self, c, q1, q2, dot: bool) -> Pair:
        b2 = self.b**2
        c = b2 * c
        prod = (1 + 2 * b2 * q1) * (1 + 2 * b2 * q2)
        root = _sqrt0(prod - 4 * c * c)
        k = self.a**2 * (2 / math.pi) * torch.atan2(2 * c, root) + self.c**2
        kdot = self.a**2 * b2 * (4 / math.pi) / root if dot else None
        return k, kdot

    def mean(self, q):
        return torch.full_like(q, self.c)

    def __call__(self, x):
        return self.a * torch.erf(self.b * x) + self.c


class GeluRule:
    """``phi(x) = x Phi(x)`` (Tsuchida et al. 2020, "Avoiding kernel fixed points"). With
    ``D^2 = (1 + q1)(1 + q2) - c^2`` and ``alpha = atan2(c, D)``:
    ``K = c / 4 + (c alpha + (c^2 + q1 q2 D^2) / ((1 + q1)(1 + q2) D)) / (2 pi)`` and
    ``Kdot = 1/4 + alpha / (2 pi) + c (1 / D^2 + (1 - q1 q2) / ((1 + q1)(1 + q2)) + 1) / (2 pi D)``.
    """

    def __init__(self, approximate: bool = False) -> None:
        self.approximate = approximate

    def pair(self, c, q1, q2, dot: bool) -> Pair:
        prod = q1 * q2
        prod1 = (q1 + 1) * (q2 + 1)
        d2 = prod1 - c * c
        d = _sqrt0(d2)
        alpha = torch.atan2(c, d)
        k = ((c * c + prod * d2) / (prod1 * d) + c * alpha) / (2 * math.pi) + 0.25 * c
        if not dot:
            return k, None
        first = (1 / d2 + (1 - prod) / prod1 + 1) * c / d / (2 * math.pi)
        return k, first + 0.25 + alpha / (2 * math.pi)

    def mean(self, q):
        # Stein: E[u Phi(u)] = q E[Phi'(u)] = q / sqrt(2 pi (1 + q))
        return q / torch.sqrt(2 * math.pi * (1 + q))

    def __call__(self, x):
        return torch.nn.functional.gelu(x, approximate="tanh" if self.approximate else "none")


class QuadratureRule:
    """Any elementwise ``fn`` by Gauss-Hermite quadrature of degree ``degree`` in each of the two
    Gaussian directions (``degree^2`` nodes; ``Kdot`` uses ``fn``'s autograd derivative).

    ``u = sqrt(2 q1) x_i``, ``v = c / sqrt(q1 / 2) x_i + sqrt(2 (q2 - c^2 / q1)) x_j`` with weights
    ``w_i w_j / pi``: exact for polynomials of degree ``< 2 degree`` in ``(u, v)``.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], degree: int) -> None:
        self.fn = fn
        self.degree = degree
        nodes, weights = np.polynomial.hermite.hermgauss(degree)
        self._nodes, self._weights = nodes, weights

    def _grid(self, like: torch.Tensor):
        x = torch.as_tensor(self._nodes, dtype=like.dtype, device=like.device)
        w = torch.as_tensor(self._weights, dtype=like.dtype, device=like.device)
        return x, w

    def derivative(self, u: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            t = u.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.fn(t).sum(), t)
        return g.detach()

    def _integrate(self, f, c, q1, q2):
        x, w = self._grid(c)
        c, q1, q2 = torch.broadcast_tensors(c, q1, q2)
        q1s = torch.clamp(q1, min=1e-30)
        cond = _sqrt0(2 * (q2 - c * c / q1s))
        slope = c / torch.sqrt(q1s / 2)
        out = torch.zeros_like(c)
        root1 = torch.sqrt(2 * q1)
        for i in range(self.degree):
            inner = f(slope[..., None] * x[i] + cond[..., None] * x) @ w  # sum over j
            out += w[i] * f(root1 * x[i]) * inner
        return out / math.pi

    def pair(self, c, q1, q2, dot: bool) -> Pair:
        k = self._integrate(self.fn, c, q1, q2)
        kdot = self._integrate(self.derivative, c, q1, q2) if dot else None
        return k, kdot

    def mean(self, q):
        x, w = self._grid(q)
        out = torch.zeros_like(q)
        for i in range(self.degree):
            out += w[i] * self.fn(torch.sqrt(2 * q) * x[i])
        return out / math.sqrt(math.pi)

    def __call__(self, x):
        return self.fn(x)
