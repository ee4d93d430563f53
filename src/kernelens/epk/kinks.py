"""Where piecewise-linear activations switch along one training step.

Along the segment ``w(t) = w_s + t Delta_s`` a ReLU network's pre-activations are piecewise
polynomials in ``t`` (affine in the first layer), and the network is a polynomial in ``t``
between two switches of any unit. Quadrature is exact on such pieces, so the EPK integrates
piece by piece once the switch points (kinks) are known. :func:`locate_kinks` finds them:

1. evaluate every pre-activation on a uniform grid of ``t`` (one batched forward per node,
   reading the inputs of every piecewise-linear call: ``relu``, ``leaky_relu``, ``relu6``,
   ``hardtanh``, ``prelu``, ``nn.ReLU`` and friends, captured with a ``TorchFunctionMode``);
2. bracket each sign change of ``z - threshold`` between neighbouring grid nodes;
3. refine all brackets together by the Illinois variant of regula falsi (one vmapped forward
   per iteration, each bracket at its own ``t``), down to round-off. Regula falsi is exact in
   one step for the affine first layer and superlinear for the polynomials further up.

A unit that switches twice between two grid nodes is not bracketed; the exact per-interval
residual of the integrator then still sees the error and refines there
(:mod:`kernelens.epk.integration`). Kinks of other non-smooth operations (max-pooling, ``abs``,
``torch.where``) are not located.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from torch.overrides import TorchFunctionMode

from .._memory import element_size, tile_size

__all__ = ["GRID", "PIECEWISE_LINEAR", "KinkLocator", "illinois"]

#: Grid cells per located interval (a unit switching twice inside one cell is missed).
GRID = 16
#: Illinois iterations at most (each halves the bracket at worst every other iteration).
MAX_ITERATIONS = 80


def _zero(_args: tuple, _kw: dict) -> tuple[float, ...]:
    return (0.0,)


def _hardtanh(args: tuple, kw: dict) -> tuple[float, ...]:
    lo = args[1] if len(args) > 1 else kw.get("min_val", -1.0)
    hi = args[2] if len(args) > 2 else kw.get("max_val", 1.0)
    return (float(lo), float(hi))


def _relu6(_args: tuple, _kw: dict) -> tuple[float, ...]:
    return (0.0, 6.0)


#: The piecewise-linear functions whose switch points are located, with their thresholds.
PIECEWISE_LINEAR: dict[Callable, Callable[[tuple, dict], tuple[float, ...]]] = {
    F.relu: _zero,
    F.relu_: _zero,
    torch.relu: _zero,
    torch.relu_: _zero,
    torch.Tensor.relu: _zero,
    torch.Tensor.relu_: _zero,
    F.leaky_relu: _zero,
    F.leaky_relu_: _zero,
    F.prelu: _zero,
    F.relu6: _relu6,
    F.hardtanh: _hardtanh,
    F.hardtanh_: _hardtanh,
}


class _Capture(TorchFunctionMode):
    """Records ``z - threshold`` (flattened per example) at every piecewise-linear call."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        thresholds = PIECEWISE_LINEAR.get(func)
        if thresholds is not None and args and isinstance(args[0], torch.Tensor):
            z = args[0].reshape(args[0].shape[0], -1)  # before an in-place call changes it
            self.values.extend(z - thr for thr in thresholds(args, kwargs))
        return func(*args, **kwargs)


class KinkLocator:
    """Switch points of the piecewise-linear activations of ``net`` along a segment.

    Args:
        net: the network (compute dtype) whose forward is probed.
        names: the trained parameters moving along the segment.
        memory_budget: bytes for one vmapped refinement forward (per-bracket weights).
    """

    def __init__(self, net: nn.Module, names: list[str], memory_budget: int | float | None):
        self.net = net
        self.names = names
        self.memory_budget = memory_budget
        self._piecewise: bool | None = None

    def _preacts(self, w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``[B, U]`` every captured ``z - threshold`` for the inputs ``x`` at weights ``w``."""
        with _Capture() as cap:
            functional_call(self.net, w, (x,))
        if not cap.values:
            return x.new_zeros(x.shape[0], 0)
        return torch.cat(cap.values, dim=1)

    def applies(self, w0: dict[str, torch.Tensor], x: torch.Tensor) -> bool:
        """Whether ``net`` calls any piecewise-linear function (probed once)."""
        if self._piecewise is None:
            with torch.no_grad():
                self._piecewise = self._preacts(w0, x[:1]).shape[1] > 0
        return self._piecewise

    def locate(
        self,
        x: torch.Tensor,
        w0: dict[str, torch.Tensor],
        delta: dict[str, torch.Tensor],
        a: float = 0.0,
        b: float = 1.0,
    ) -> list[list[float]]:
        """Sorted switch points in the open interval ``(a, b)`` for each input row ``x[p]``."""
        t_n = x.shape[0]
        found: list[list[float]] = [[] for _ in range(t_n)]
        if not self.applies(w0, x):
            return found
        ts = [a + (b - a) * i / GRID for i in range(GRID + 1)]
        with torch.no_grad():
            z = torch.stack([self._preacts(self._at(w0, delta, t), x) for t in ts])  # [G+1, T, U]
        left, right = z[:-1], z[1:]
        interior = (torch.arange(GRID) < GRID - 1)[:, None, None]
        switch = (left * right < 0) | ((right == 0) & (left != 0) & interior)
        cells, pts, units = torch.nonzero(switch, as_tuple=True)
        if cells.numel() == 0:
            return found
        grid = torch.tensor(ts, dtype=torch.float64)
        lo, hi = grid[cells], grid[cells + 1]
        z_lo = left[cells, pts, units].double()
        z_hi = right[cells, pts, units].double()
        scale = z[:, pts, units].abs().amax(0).double()
        roots = illinois(
            lambda k, t: self._values_at(x, w0, delta, pts[k], units[k], t),
            lo, hi, z_lo, z_hi, 8 * torch.finfo(torch.float64).eps * scale,
        )  # fmt: skip
        span = 1e-13 * (b - a)
        for p, t in sorted(zip(pts.tolist(), roots.tolist())):
            if a + span < t < b - span and (not found[p] or t - found[p][-1] > span):
                found[p].append(t)
        return found

    def _at(self, w0: dict, delta: dict, t: float | torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: w0[k] + t * delta[k] for k in self.names}

    def _values_at(
        self,
        x: torch.Tensor,
        w0: dict[str, torch.Tensor],
        delta: dict[str, torch.Tensor],
        pts: torch.Tensor,
        units: torch.Tensor,
        t: torch.Tensor,
    ) -> torch.Tensor:
        """``z_{units[k]}(t[k])`` for input ``x[pts[k]]``, each bracket at its own ``t``."""
        wdtype = w0[self.names[0]].dtype
        per_row = 4 * sum(w0[k].numel() for k in self.names) * element_size(wdtype)
        rows = tile_size(t.numel(), per_row, self.memory_budget)

        def one(xr: torch.Tensor, tr: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            z = self._preacts(self._at(w0, delta, tr), xr[None])[0]
            return z.gather(0, u[None])[0]

        out = []
        with torch.no_grad():
            for s in range(0, t.numel(), rows):
                xs, ts, us = x[pts[s : s + rows]], t[s : s + rows].to(wdtype), units[s : s + rows]
                try:
                    out.append(vmap(one)(xs, ts, us))
                except (RuntimeError, NotImplementedError):  # an op without a batching rule:
                    out.append(torch.stack([one(*row) for row in zip(xs, ts, us)]))  # same values
        return torch.cat(out).to(torch.float64)


def illinois(
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    lo: torch.Tensor,
    hi: torch.Tensor,
    f_lo: torch.Tensor,
    f_hi: torch.Tensor,
    tol: torch.Tensor,
) -> torch.Tensor:
    """Roots of many scalar functions at once by the Illinois variant of regula falsi.

    Args:
        f: ``f(k, t)`` evaluates functions ``k`` ``[M]`` at ``t`` ``[M]`` (float64).
        lo, hi: ``[K]`` brackets with ``f_lo * f_hi < 0`` (or ``f_hi == 0``).
        f_lo, f_hi: ``[K]`` the values there.
        tol: ``[K]`` stop once ``|f(t)| <= tol`` (or the bracket is at round-off).
    """
    eps = torch.finfo(torch.float64).eps
    a, b, fa, fb = lo.clone(), hi.clone(), f_lo.clone(), f_hi.clone()
    root = torch.where(fb == 0, b, 0.5 * (a + b))
    active = fb != 0
    for _ in range(MAX_ITERATIONS):
        if not bool(active.any()):
            break
        k = torch.nonzero(active)[:, 0]
        t = b[k] - fb[k] * (b[k] - a[k]) / (fb[k] - fa[k])
        t = torch.where((t > a[k]) & (t < b[k]), t, 0.5 * (a[k] + b[k]))
        ft = f(k, t)
        flip = ft * fb[k] < 0  # the root lies between t and b: b becomes the other end
        a[k], fa[k] = torch.where(flip, b[k], a[k]), torch.where(flip, fb[k], 0.5 * fa[k])
        b[k], fb[k] = t, ft
        root[k] = t
        done = (ft.abs() <= tol[k]) | ((b[k] - a[k]).abs() <= 4 * eps * b[k].abs().clamp_min(1))
        active[k[done]] = False
    return root
