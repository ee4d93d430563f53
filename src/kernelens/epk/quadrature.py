"""Quadrature rules on sub-intervals of [0, 1] for the path integral of one training step.

The EPK integrates ``grad_w f(x; w_s + t Delta_s)`` over ``t in [0, 1]``. Along the straight
segment the integrand is analytic for smooth activations, so Gauss-Legendre converges
spectrally (``n`` nodes integrate polynomials of degree ``2n - 1`` exactly). ReLU-type kinks
make it piecewise smooth; :class:`Interval` supports splitting at located kinks and bisection,
driven by the exact residual ``f(x; w(b)) - f(x; w(a)) - (quadrature of the JVP)`` available on every
sub-interval (see :mod:`kernelens.epk.integration`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .._validation import check_choice, check_positive_int

__all__ = ["RULES", "Interval", "rule_nodes"]

RULES = ("gauss-legendre", "midpoint")


@lru_cache(maxsize=64)
def _reference_rule(rule: str, n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Nodes and weights on [0, 1]."""
    if rule == "gauss-legendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return tuple((x + 1.0) / 2.0), tuple(w / 2.0)
    return tuple((np.arange(n) + 0.5) / n), (1.0 / n,) * n


def rule_nodes(rule: str, n: int, a: float = 0.0, b: float = 1.0) -> list[tuple[float, float]]:
    """``(node, weight)`` pairs of an ``n``-point ``rule`` on ``[a, b]`` (weights sum to b - a).

    Args:
        rule: ``"gauss-legendre"`` or ``"midpoint"``.
        n: number of nodes.
    """
    check_choice(rule, "rule", RULES)
    n = check_positive_int(n, "nodes")
    x, w = _reference_rule(rule, n)
    h = b - a
    return [(a + h * xi, h * wi) for xi, wi in zip(x, w)]


@dataclass(frozen=True, order=True)
class Interval:
    """A sub-interval ``[a, b]`` of [0, 1] at refinement ``level`` (0: a whole piece between
    two located kinks, or [0, 1]; each bisection adds one)."""

    a: float
    b: float
    level: int = 0

    @property
    def length(self) -> float:
        return self.b - self.a

    def children(self) -> tuple[Interval, Interval]:
        """The two halves."""
        m = 0.5 * (self.a + self.b)
        return Interval(self.a, m, self.level + 1), Interval(m, self.b, self.level + 1)

    def split(self, points: list[float]) -> list[Interval]:
        """The pieces between ``a``, the sorted interior ``points`` and ``b`` (one level down)."""
        ends = [self.a, *points, self.b]
        return [Interval(lo, hi, self.level + 1) for lo, hi in itertools.pairwise(ends)]
