"""Adaptive, kink-aware quadrature of one training step's path integral.

For a step ``w_s -> w_s + Delta_s`` and test points ``x`` ``[T, ...]`` the integrator computes
``int_0^1 <grad_w f(x; w_s + t Delta_s), v> dt`` for a few stacked tangents ``v`` (row 0 is
``Delta_s`` itself), with nodes chosen so that the exactly known left side
``f(x; w_{s+1}) - f(x; w_s)`` is met to the tolerance:

1. split [0, 1] at the switch points of the network's piecewise-linear activations, per test
   point (:mod:`kernelens.epk.kinks`); on each piece the integrand is a polynomial (ReLU) or
   analytic (smooth activations);
2. Gauss-Legendre with 2, then 4, then 8 nodes per piece where the residual
   ``f(w(b)) - f(w(a)) - quadrature`` exceeds the tolerance;
3. then locate kinks again inside the failing piece (finer grid) and split there, or bisect
   it, with 4 nodes per part, down to ``max_depth``.

Accepted nodes go to a callback (the factored contraction) and to the returned log (the
backward pass of momentum and Adam).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..ntk import Factors, dense_dot
from .kinks import KinkLocator
from .path import PathModel
from .quadrature import Interval, rule_nodes

__all__ = [
    "AUTO_BISECT_NODES",
    "AUTO_NODES",
    "AcceptedNodes",
    "PathIntegrator",
    "StepIntegral",
]

#: ``nodes="auto"``: Gauss-Legendre with 2, then 4, then 8 nodes per piece where the residual is
#: too large (spectral convergence for smooth pieces, exact for polynomial ones).
AUTO_NODES = (2, 4, 8)
#: Nodes per part once a piece is split further.
AUTO_BISECT_NODES = 4

Tensors = dict[str, torch.Tensor]
#: ``on_nodes(points [P], [(t, weight, factors of x[points] at w(t))])``
NodeCallback = Callable[[torch.Tensor, list[tuple[float, float, Factors]]], None]


@dataclass(frozen=True)
class AcceptedNodes:
    """Quadrature node ``t`` with weight ``weight``, accepted for the test points ``points``."""

    t: float
    weight: float
    points: torch.Tensor


@dataclass
class StepIntegral:
    """The quadrature of one step.

    Attributes:
        projections: ``[M, T, O]`` the integrals for the ``M`` stacked tangents.
        quadrature_residual: ``[T, O]`` ``f(x; w_{s+1}) - f(x; w_s)`` minus the integral
            along ``Delta_s`` (exactly what the quadrature missed).
        evaluations: Jacobian evaluations (test point x node).
        unconverged: (test point, interval) pairs accepted above the tolerance.
        next_start: the rule to start the next step with.
        nodes: the accepted nodes (for the backward pass).
    """

    projections: torch.Tensor
    quadrature_residual: torch.Tensor
    evaluations: int
    unconverged: int
    next_start: int
    nodes: list[AcceptedNodes] = field(default_factory=list)


def next_start(start: int, needed: int, headroom: float) -> int:
    """The first rule for the next step (consecutive steps are alike): the largest rule this
    step needed on its first pieces, or one rule fewer if the first rule met the tolerance with
    four orders of magnitude to spare (halving the nodes costs about that much accuracy)."""
    rung = AUTO_NODES.index(needed)
    if needed == start and headroom < 1e-4:
        rung = max(rung - 1, 0)
    return AUTO_NODES[rung]


class PathIntegrator:
    """Integrates ``<gbar_s(x), v>`` along one step for test points ``x`` (see module doc).

    Args:
        path: the network along the recorded path.
        rule: ``"gauss-legendre"`` or ``"midpoint"``.
        adaptive: refine (``nodes="auto"``) or use the fixed rule per piece.
        rtol: tolerance relative to ``scale`` (``max |f(x)|`` per test point) and to the
            interval length.
        max_depth: maximal refinement depth below a piece.
        locate_kinks: split at the switch points of piecewise-linear activations.
        memory_budget: bytes for the kink refinement's vmapped forwards.
    """

    def __init__(
        self,
        path: PathModel,
        *,
        rule: str,
        adaptive: bool,
        rtol: float,
        max_depth: int,
        locate_kinks: bool,
        memory_budget: int | float | None,
    ) -> None:
        self.path = path
        self.rule = rule
        self.adaptive = adaptive
        self.rtol = rtol
        self.max_depth = max_depth
        self.kinks = KinkLocator(path.view, path.names, memory_budget) if locate_kinks else None

    def _pieces(
        self,
        x: torch.Tensor,
        w0: Tensors,
        delta: Tensors,
        iv: Interval,
        pts: torch.Tensor,
        fallback: Callable[[Interval], list[Interval]],
    ) -> list[tuple[Interval, torch.Tensor]]:
        """``iv`` split at each point's kinks, points grouped by identical splits; points
        without kinks in ``iv`` get ``fallback(iv)``."""
        roots: list[list[float]] = [[] for _ in range(pts.numel())]
        if self.kinks is not None and self.kinks.applies(w0, x):
            roots = self.kinks.locate(x[pts], w0, delta, iv.a, iv.b)
        groups: dict[tuple[float, ...], list[int]] = {}
        for j, r in enumerate(roots):
            groups.setdefault(tuple(r), []).append(j)
        out = []
        for r, members in groups.items():
            sel = pts if len(members) == pts.numel() else pts[torch.tensor(members)]
            parts = iv.split(list(r)) if r else fallback(iv)
            out.extend((part, sel) for part in parts)
        return out

    def integrate(
        self,
        x: torch.Tensor,
        w0: Tensors,
        delta: Tensors,
        f0: torch.Tensor,
        f1: torch.Tensor,
        scale: torch.Tensor,
        tangents: Tensors,
        on_nodes: NodeCallback | None,
        start_nodes: int,
    ) -> StepIntegral:
        """Quadrature of ``<gbar_s(x), v>`` for the stacked tangents ``v`` ``{name: [M, ...]}``
        (row 0 = ``Delta_s``), given ``f0 = f(x; w_s)``, ``f1 = f(x; w_{s+1})`` ``[T, O]`` and
        the per-point ``scale`` ``[T]``; starts with ``start_nodes`` per piece."""
        path, dtype = self.path, self.path.dtype
        t_n, o = f0.shape
        m = next(iter(tangents.values())).shape[0]
        proj = torch.zeros(m, t_n, o, dtype=dtype)
        qres = torch.zeros(t_n, o, dtype=dtype)
        noise = 64 * torch.finfo(dtype).eps
        ends: dict[float, torch.Tensor] = {0.0: f0, 1.0: f1}
        evaluations, unconverged = 0, 0
        log: list[AcceptedNodes] = []
        everyone = torch.arange(t_n)
        first = self._pieces(
            x, w0, delta, Interval(0.0, 1.0, -1), everyone, lambda _: [Interval(0.0, 1.0, 0)]
        )
        pending = [(iv, pts, start_nodes) for iv, pts in first]
        needed = start_nodes  # the largest level-0 rule any point needed
        headroom = 0.0  # max error / tolerance of the points accepted with the first rule

        def point(t: float) -> Tensors:
            return {k: w0[k] + t * delta[k] for k in path.names}

        def f_at(t: float, pts: torch.Tensor) -> torch.Tensor:
            if t not in ends:
                ends[t] = torch.full((t_n, o), float("nan"), dtype=dtype)
            vals = ends[t]
            missing = pts[torch.isnan(vals[pts, 0])]
            if missing.numel():
                vals[missing] = path.forward(point(t), x[missing])
            return vals[pts]

        while pending:
            nxt = []
            for iv, pts, n_nodes in pending:
                xs = x[pts]
                est = torch.zeros(m, pts.numel(), o, dtype=dtype)
                node_facs = []
                for t, q in rule_nodes(self.rule, n_nodes, iv.a, iv.b):
                    fac = path.factors(xs, point(t))
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
                    log.extend(AcceptedNodes(t, q, sel) for t, q, _ in accepted)
                if bool(bad.any()):
                    rest = pts[bad]
                    if iv.level == 0 and n_nodes < AUTO_NODES[-1]:  # more nodes first
                        more = AUTO_NODES[AUTO_NODES.index(n_nodes) + 1]
                        nxt.append((iv, rest, more))
                        needed = max(needed, more)
                    else:
                        if iv.level == 0:
                            needed = AUTO_NODES[-1]
                        parts = self._pieces(x, w0, delta, iv, rest, lambda i: list(i.children()))
                        nxt.extend((part, sel, AUTO_BISECT_NODES) for part, sel in parts)
            pending = nxt
        following = next_start(start_nodes, needed, headroom) if self.adaptive else start_nodes
        return StepIntegral(proj, qres, evaluations, unconverged, following, log)
