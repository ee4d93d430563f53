"""The implicit system of a recurrent model: rollout, P, P^T, P^-1 and K, matrix-free.

States are stored as ``S [B, T, L, D]`` (examples, time, layers, the layer's state of size
``D = C H``). The implicit constraint of layer ``l`` at time ``t`` is

    F_{t,l} = s_{t,l} - f_l(s_{t-1,l}, in_{t,l}; theta) = 0,   in_{t,0} = x_t,  in_{t,l} = h_{t,l-1},

so ``dF/ds = I - N`` with ``N`` strictly lower triangular in (t, l) order, and
``P = (I - N)^-1`` is a forward substitution through per-step Jacobian-vector products
(:func:`kernelens.ntk._state.state_jvp`); ``P^T`` a backward one through vector-Jacobian
products. No per-step Jacobian is ever formed. Vectors on the state are ``[B T L D, k]`` blocks
in C order of ``[B, T, L, D]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from .._memory import element_size, tile_size
from ..ntk._state import state_jvp, state_vjp
from ._cells import LayerCell, SiteGroup

__all__ = ["CustomCell", "RecurrentSystem", "zero_tangents"]

Params = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class CustomCell:
    """A user step function ``s_t = fn(s_{t-1} [r, H], x_t [r, I], params)`` (no site groups)."""

    fn: Callable[[torch.Tensor, torch.Tensor, Params], torch.Tensor]
    hidden: int
    inputs: int
    kind: str = "custom"
    channels: int = 1
    groups: tuple[SiteGroup, ...] = ()

    @property
    def width(self) -> int:
        return self.hidden

    def step(self, state: torch.Tensor, inp: torch.Tensor, params: Params) -> torch.Tensor:
        return self.fn(state, inp, params)


Cell = LayerCell | CustomCell


def zero_tangents(values: Params, k: int) -> dict[str, torch.Tensor]:
    """``{name: zeros [k, *shape]}``: a block of k zero parameter vectors."""
    return {n: v.new_zeros(k, *v.shape) for n, v in values.items()}


class RecurrentSystem:
    """Rollout and state operators of a stack of recurrent cells.

    Args:
        cells: one cell per layer (all of the same state width ``D``).
        values: the differentiated parameters ``{name: tensor}`` (theta).
        fixed: every other parameter the cells read.
        x: inputs ``[B, T, I]``.
        h0: initial states ``[L, B, D]``.
        memory_budget: bytes for one tile's working set.
    """

    def __init__(
        self,
        cells: Sequence[Cell],
        values: Params,
        fixed: Params,
        x: torch.Tensor,
        h0: torch.Tensor,
        memory_budget: int,
    ) -> None:
        self.cells = list(cells)
        self.values = dict(values)
        self.fixed = dict(fixed)
        self.names = tuple(values)
        self.x = x
        self.budget = memory_budget
        self.dtype, self.device = x.dtype, x.device
        self.B, self.T = x.shape[0], x.shape[1]
        self.L = len(self.cells)
        self.D = self.cells[0].width
        self.h0 = h0
        with torch.no_grad():
            self.S = self._rollout()
        self.S_prev = torch.cat([h0.permute(1, 0, 2)[:, None], self.S[:, :-1]], dim=1)
        self.size = self.B * self.T * self.L * self.D

    # -- rollout -------------------------------------------------------------------------
    def params(self, values: Params | None = None) -> dict[str, torch.Tensor]:
        out = dict(self.fixed)
        out.update(self.values if values is None else values)
        return out

    def layer_input(self, S: torch.Tensor, layer: int) -> torch.Tensor:
        """Input of ``layer`` at every (example, time): ``[B, T, I_l]``."""
        if layer == 0:
            return self.x
        return S[:, :, layer - 1, : self.cells[layer - 1].hidden]

    def rollout(self, values: Params | None = None) -> torch.Tensor:
        """All states ``[B, T, L, D]`` at parameters ``values`` (default theta), differentiable."""
        p = self.params(values)
        layers_in = self.x
        out = []
        for layer, cell in enumerate(self.cells):
            s = self.h0[layer]
            seq = []
            for t in range(self.T):
                s = cell.step(s, layers_in[:, t], p)
                seq.append(s)
            seq = torch.stack(seq, dim=1)
            out.append(seq)
            layers_in = seq[..., : cell.hidden]
        return torch.stack(out, dim=2)

    def _rollout(self) -> torch.Tensor:
        S = self.rollout()
        if S.shape[-1] != self.D or any(c.width != self.D for c in self.cells):
            raise ValueError(
                f"the cell returned states of size {S.shape[-1]}, but h0 has size {self.D}; the "
                "step function must map h [B, H] to a new h [B, H] of the same size."
            )
        if not bool(torch.isfinite(S).all()):
            raise ValueError(
                "the rollout produced NaN or Inf states (the recursion diverges at these "
                "parameters); lower the recurrent gain or the sequence length."
            )
        return S

    # -- tiles ---------------------------------------------------------------------------
    def _tiles(self, k: int) -> list[slice]:
        widest = max([self.D] + [g.width for c in self.cells for g in c.groups])
        sites = max([1] + [c.inputs + c.hidden + 2 for c in self.cells])
        per_example = element_size(self.dtype) * self.T * self.L * (4 * widest + sites) * (k + 2)
        size = tile_size(self.B, 8 * per_example, self.budget)
        return [slice(s, min(self.B, s + size)) for s in range(0, self.B, size)]

    def _blocks(self, V: torch.Tensor) -> torch.Tensor:
        """``[S, k]`` -> ``[k, B, T, L, D]``."""
        return V.T.reshape(V.shape[1], self.B, self.T, self.L, self.D)

    @staticmethod
    def _flat(Y: torch.Tensor) -> torch.Tensor:
        return Y.reshape(Y.shape[0], -1).T

    def _step_fn(self, layer: int, t: int, e: slice, with_input: bool):
        cell, p = self.cells[layer], self.params()
        if with_input:
            return lambda s, i: cell.step(s, i, p)
        inp = self.layer_input(self.S, layer)[e, t]
        return lambda s: cell.step(s, inp, p)

    # -- P = (dF/ds)^-1 and its adjoint ---------------------------------------------------
    def p(self, V: torch.Tensor) -> torch.Tensor:
        """``P V`` by forward substitution over (time, layer)."""
        U = self._blocks(V)
        Y = torch.zeros_like(U)
        for e in self._tiles(U.shape[0]):
            for t in range(self.T):
                for layer in range(self.L):
                    Y[:, e, t, layer] = U[:, e, t, layer] + self._propagate(Y, e, t, layer)
        return self._flat(Y)

    def _propagate(self, Y: torch.Tensor, e: slice, t: int, layer: int) -> torch.Tensor:
        """``A_{t,l} y_{t-1,l} + C_{t,l} y_{t,l-1}`` (the tangent of s_{t,l} from its inputs)."""
        prev = self.S_prev[e, t, layer]
        if layer == 0:
            if t == 0:
                return torch.zeros_like(Y[:, e, t, layer])
            return state_jvp(self._step_fn(0, t, e, False), (prev,), (Y[:, e, t - 1, 0],))
        h = self.cells[layer - 1].hidden
        inp = self.S[e, t, layer - 1, :h]
        tan_prev = Y[:, e, t - 1, layer] if t > 0 else torch.zeros_like(Y[:, e, t, layer])
        return state_jvp(
            self._step_fn(layer, t, e, True), (prev, inp), (tan_prev, Y[:, e, t, layer - 1, :h])
        )

    def p_adjoint(self, V: torch.Tensor) -> torch.Tensor:
        """``P^T V`` by backward substitution over (time, layer)."""
        acc = self._blocks(V).clone()
        for e in self._tiles(acc.shape[0]):
            for t in range(self.T - 1, -1, -1):
                for layer in range(self.L - 1, -1, -1):
                    if t == 0 and layer == 0:
                        continue
                    self._pull(acc, e, t, layer)
        return self._flat(acc)

    def _pull(self, acc: torch.Tensor, e: slice, t: int, layer: int) -> None:
        """Send the (final) adjoint of s_{t,l} back to s_{t-1,l} and to the layer below."""
        z = acc[:, e, t, layer]
        prev = self.S_prev[e, t, layer]
        if layer == 0:
            (g_prev,) = state_vjp(self._step_fn(0, t, e, False), (prev,), z)
            acc[:, e, t - 1, 0] += g_prev
            return
        h = self.cells[layer - 1].hidden
        inp = self.S[e, t, layer - 1, :h]
        g_prev, g_inp = state_vjp(self._step_fn(layer, t, e, True), (prev, inp), z)
        if t > 0:
            acc[:, e, t - 1, layer] += g_prev
        acc[:, e, t, layer - 1, :h] += g_inp

    def _layer_sites(self, k: int):
        """For each tile of examples and each layer: ``(e, b, layer, cell, prev, inp)`` with
        the stacked previous states ``[b T, D]`` and layer inputs ``[b T, I_l]`` of its sites."""
        for e in self._tiles(k):
            for layer, cell in enumerate(self.cells):
                prev, inp = self._rows(e, layer)
                yield e, e.stop - e.start, layer, cell, prev, inp

    def p_inverse(self, V: torch.Tensor) -> torch.Tensor:
        """``(dF/ds) V = V - N V``, all (example, time) sites of a layer at once."""
        U = self._blocks(V)
        out = U.clone()
        zero_first = torch.zeros_like(U[:, :, :1])
        U_prev = torch.cat([zero_first, U[:, :, :-1]], dim=2)  # tangent of s_{t-1}
        p = self.params()
        for e, b, layer, cell, prev, inp in self._layer_sites(U.shape[0]):
            tp = U_prev[:, e, :, layer].reshape(-1, b * self.T, self.D)
            if layer == 0:
                jv = state_jvp(lambda s, i=inp, c=cell: c.step(s, i, p), (prev,), (tp,))
            else:
                h = self.cells[layer - 1].hidden
                ti = U[:, e, :, layer - 1, :h].reshape(-1, b * self.T, h)
                jv = state_jvp(lambda s, i, c=cell: c.step(s, i, p), (prev, inp), (tp, ti))
            out[:, e, :, layer] -= jv.reshape(-1, b, self.T, self.D)
        return self._flat(out)

    def p_inverse_adjoint(self, V: torch.Tensor) -> torch.Tensor:
        """``(dF/ds)^T V = V - N^T V``, all (example, time) sites of a layer at once."""
        U = self._blocks(V)
        out = U.clone()
        p = self.params()
        for e, b, layer, cell, prev, inp in self._layer_sites(U.shape[0]):
            cot = U[:, e, :, layer].reshape(-1, b * self.T, self.D)
            if layer == 0:
                (g_prev,) = state_vjp(lambda s, i=inp, c=cell: c.step(s, i, p), (prev,), cot)
            else:
                g_prev, g_inp = state_vjp(lambda s, i, c=cell: c.step(s, i, p), (prev, inp), cot)
                h = self.cells[layer - 1].hidden
                out[:, e, :, layer - 1, :h] -= g_inp.reshape(-1, b, self.T, h)
            g_prev = g_prev.reshape(-1, b, self.T, self.D)
            out[:, e, :-1, layer] -= g_prev[:, :, 1:]  # s_{t-1} feeds step t
        return self._flat(out)

    # -- K = (dF/dtheta)(dF/dtheta)^T --------------------------------------------------------
    def _rows(self, e: slice, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = (e.stop - e.start) * self.T
        prev = self.S_prev[e, :, layer].reshape(rows, self.D)
        inp = self.layer_input(self.S, layer)[e].reshape(rows, -1)
        return prev, inp

    def immediate_vjp(self, V: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(dF/dtheta)^T V`` up to sign: ``{name: [k, *shape]}``, all sites at once."""
        U = self._blocks(V)
        k = U.shape[0]
        grads = zero_tangents(self.values, k)
        for e, _, layer, cell, prev, inp in self._layer_sites(k):
            cot = U[:, e, :, layer].reshape(k, -1, self.D)
            (g,) = state_vjp(self._immediate_fn(cell, prev, inp), (self.values,), cot)
            for n in grads:
                grads[n] += g[n]
        return grads

    def _immediate_fn(self, cell: Cell, prev: torch.Tensor, inp: torch.Tensor):
        """``theta -> f(s_{t-1}, in_t; theta)`` at fixed states (the immediate dependence)."""
        fixed = self.fixed
        return lambda theta: cell.step(prev, inp, {**fixed, **theta})

    def immediate_jvp(self, tangents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(dF/dtheta) t`` up to sign for tangents ``{name: [k, *shape]}``: ``[S, k]``."""
        k = next(iter(tangents.values())).shape[0]
        out = torch.zeros(k, self.B, self.T, self.L, self.D, dtype=self.dtype, device=self.device)
        for e, b, layer, cell, prev, inp in self._layer_sites(k):
            f = self._immediate_fn(cell, prev, inp)
            jv = state_jvp(f, (self.values,), (dict(tangents),))
            out[:, e, :, layer] = jv.reshape(k, b, self.T, self.D)
        return self._flat(out)

    def k_jvp(self, V: torch.Tensor) -> torch.Tensor:
        """``K V`` through immediate parameter products (any cell)."""
        return self.immediate_jvp(self.immediate_vjp(V))

    @property
    def has_sites(self) -> bool:
        """Whether every differentiated parameter sits in a declared site group."""
        covered = {b.param for c in self.cells for g in c.groups for b in g.blocks}
        return bool(covered) and set(self.names) <= covered

    def k_kronecker(self, V: torch.Tensor) -> torch.Tensor:
        """``K V = sum_g B_g (Z_g Z_g^T (x) I) B_g^T V`` (the Kronecker core)."""
        U = self._blocks(V)
        k = U.shape[0]
        out = torch.zeros_like(U)
        p = self.params()
        for layer, cell in enumerate(self.cells):
            for g in cell.groups:
                tiles = self._tiles(k)
                M = None
                for e in tiles:  # pass 1: M = Z^T B^T u (the weight-space gradient)
                    Z, pullback, _ = self._site_maps(cell, g, layer, e, p)
                    if Z is None:
                        break
                    w = pullback(U[:, e, :, layer].reshape(k, -1, self.D))
                    term = torch.einsum("rd,krm->kdm", Z, w)
                    M = term if M is None else M + term
                if M is None:
                    continue
                for e in tiles:  # pass 2: B (Z M)
                    Z, _, push = self._site_maps(cell, g, layer, e, p)
                    y = push(torch.einsum("rd,kdm->krm", Z, M))
                    out[:, e, :, layer] += y.reshape(k, e.stop - e.start, self.T, self.D)
        return self._flat(out)

    def _site_maps(self, cell: LayerCell, g: SiteGroup, layer: int, e: slice, p: Params):
        """``Z_g [r, d]``, ``w -> B_g^T w`` and ``a -> B_g a`` at the sites of tile ``e``."""
        prev, inp = self._rows(e, layer)
        Z = cell.sites(g, prev, inp, self.names)
        pre = cell.pre(prev, inp, p)

        def head(a):
            return cell.head(prev, {**pre, g.name: a})

        def pullback(w):
            return state_vjp(head, (pre[g.name],), w)[0]

        def push(a):
            return state_jvp(head, (pre[g.name],), (a,))

        return Z, pullback, push

    # -- the Kronecker core ----------------------------------------------------------------
    def site_matrices(self) -> dict[str, tuple[torch.Tensor, int, int]]:
        """``{site: (Z [B T, d], rank(Z), width m_g)}`` for every layer's site groups."""
        out = {}
        whole = slice(0, self.B)
        for layer, cell in enumerate(self.cells):
            for g in cell.groups:
                prev, inp = self._rows(whole, layer)
                Z = cell.sites(g, prev, inp, self.names)
                if Z is None:
                    continue
                rank = int(torch.linalg.matrix_rank(Z))
                out[f"l{layer}.{g.name}"] = (Z, rank, g.width)
        return out

    def n_params(self) -> int:
        return sum(math.prod(v.shape) for v in self.values.values())
