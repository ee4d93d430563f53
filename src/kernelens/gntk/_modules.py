"""The implicit system of any model whose states are the outputs of named submodules.

With states ``S = (S_1, ..., S_m)`` (the outputs of the named submodules, per example), the
model defines ``Phi_k(S, theta)``: the output module ``k`` computes when every named module's
output is *replaced* by the given ``S_j`` (forward hooks). The constraint is
``F = S - Phi(S, theta) = 0``; ``N = dPhi/dS`` is nilpotent (a state only feeds later ones), so

- ``P^-1 V = V - N V`` (one jvp of Phi in the state),
- ``P V``: one jvp of the model with a perturbation ``eps_k`` *added* to every named output
  (the tangent of the recorded outputs is ``(I - N)^-1 V``), ``P^T`` its vjp,
- ``K = J_imm J_imm^T`` with ``J_imm = dPhi/dtheta`` at fixed states (jvp / vjp).

Vectors on the state are ``[B D, k]`` in C order of ``[B, D]`` (D = sum of per-example sizes).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from .._memory import element_size, tile_size
from ..ntk._model import ModelCall
from ..ntk._state import state_jvp, state_vjp
from ._recurrent import zero_tangents

__all__ = ["ModuleStateSystem"]


def _resolve(model: nn.Module, states: Sequence[str]) -> list[nn.Module]:
    if isinstance(states, str) or not isinstance(states, Sequence) or not states:
        raise TypeError(
            "states must be a non-empty list of submodule names (as in model.named_modules()), "
            f"e.g. states=['blocks.0', 'blocks.1']; got {states!r}."
        )
    named = dict(model.named_modules())
    mods = []
    for s in states:
        if not isinstance(s, str) or s not in named or s == "":
            close = difflib.get_close_matches(str(s), [n for n in named if n], n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"states names {s!r}, which is no submodule of the model.{hint} Use names from "
                "model.named_modules() (not the empty root name)."
            )
        mods.append(named[s])
    if len(set(states)) != len(states):
        raise ValueError(f"states lists a submodule twice: {list(states)}; name each once.")
    return mods


class ModuleStateSystem:
    """State operators of ``model`` on ``x`` with states the outputs of ``states``."""

    def __init__(
        self, call: ModelCall, x: torch.Tensor, states: Sequence[str], memory_budget: int
    ) -> None:
        self.call = call
        self.state_names = list(states)
        self.modules = _resolve(call.model, self.state_names)
        self.x = x
        self.budget = memory_budget
        self.names = call.names
        self.values = call.values
        self.dtype, self.device = call.dtype, call.device
        self.B = x.shape[0]
        with torch.no_grad():
            outs = self._run(x[:1], "record", None, None, split=True)
        self.sizes = [o.numel() for o in outs]
        self.D = sum(self.sizes)
        self.size = self.B * self.D
        with torch.no_grad():
            self.S = torch.cat([self._run(x[e], "record", None, None) for e in self._tiles(1)])
        if not bool(torch.isfinite(self.S).all()):
            raise ValueError("the named submodules produced NaN or Inf states on x.")

    # -- the model with hooks ------------------------------------------------------------
    def _run(
        self,
        x: torch.Tensor,
        mode: str,
        given: torch.Tensor | None,
        values: Mapping[str, torch.Tensor] | None,
        *,
        split: bool = False,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Run the model on ``x [b, ...]``; return the named outputs ``[b, D]``.

        ``mode`` "record": plain run; "replace": named outputs are replaced by ``given``
        (returns what the modules computed); "inject": ``given`` is added to them. With
        ``split``, the list of per-module outputs ``[b, D_k]``."""
        b = x.shape[0]
        recorded: list[torch.Tensor | None] = [None] * len(self.modules)
        offsets = [0]
        for s in getattr(self, "sizes", [0] * len(self.modules)):
            offsets.append(offsets[-1] + s)

        def make_hook(k: int):
            def hook(module, args, out):
                if not isinstance(out, torch.Tensor):
                    raise TypeError(
                        f"states[{k}] = {self.state_names[k]!r} returns {type(out).__name__}, "
                        "not a tensor; name a submodule that returns one tensor (e.g. a "
                        "wrapper that selects the output you mean)."
                    )
                if recorded[k] is not None:
                    raise ValueError(
                        f"states[{k}] = {self.state_names[k]!r} runs more than once in one "
                        "forward pass, so its output is not one state; name submodules that "
                        "run once."
                    )
                if out.shape[0] != b:
                    raise ValueError(
                        f"states[{k}] = {self.state_names[k]!r} returns shape "
                        f"{tuple(out.shape)}, whose first axis is not the batch ({b})."
                    )
                if mode == "record" or given is None:
                    recorded[k] = out.reshape(b, -1)
                    return None
                g = given[:, offsets[k] : offsets[k + 1]].reshape(out.shape)
                if mode == "replace":
                    recorded[k] = out.reshape(b, -1)
                    return g
                new = out + g
                recorded[k] = new.reshape(b, -1)
                return new

            return hook

        handles = [m.register_forward_hook(make_hook(k)) for k, m in enumerate(self.modules)]
        try:
            functional_call(self.call.model, self.call.mapping(values), (x,), strict=False)
        finally:
            for h in handles:
                h.remove()
        missing = [self.state_names[k] for k, r in enumerate(recorded) if r is None]
        if missing:
            raise ValueError(
                f"states {missing} did not run in the model's forward pass, so they are no "
                "states of it; name submodules that the forward pass calls."
            )
        return recorded if split else torch.cat(recorded, dim=1)  # type: ignore[arg-type]

    def _tiles(self, k: int) -> list[slice]:
        d = getattr(self, "D", 1)
        per_example = element_size(self.dtype) * 16 * (d + 64) * (k + 2)
        size = tile_size(self.B, per_example, self.budget)
        return [slice(s, min(self.B, s + size)) for s in range(0, self.B, size)]

    def _blocks(self, V: torch.Tensor) -> torch.Tensor:
        return V.T.reshape(V.shape[1], self.B, self.D)

    @staticmethod
    def _flat(Y: torch.Tensor) -> torch.Tensor:
        return Y.reshape(Y.shape[0], -1).T

    # -- P, P^T, P^-1 ----------------------------------------------------------------------
    def p(self, V: torch.Tensor) -> torch.Tensor:
        U = self._blocks(V)
        out = torch.empty_like(U)
        for e in self._tiles(U.shape[0]):
            x = self.x[e]
            zero = torch.zeros_like(self.S[e])
            out[:, e] = state_jvp(
                lambda eps, x=x: self._run(x, "inject", eps, None), (zero,), (U[:, e],)
            )
        return self._flat(out)

    def p_adjoint(self, V: torch.Tensor) -> torch.Tensor:
        U = self._blocks(V)
        out = torch.empty_like(U)
        for e in self._tiles(U.shape[0]):
            x = self.x[e]
            zero = torch.zeros_like(self.S[e])
            (out[:, e],) = state_vjp(
                lambda eps, x=x: self._run(x, "inject", eps, None), (zero,), U[:, e]
            )
        return self._flat(out)

    def p_inverse(self, V: torch.Tensor) -> torch.Tensor:
        U = self._blocks(V)
        out = U.clone()
        for e in self._tiles(U.shape[0]):
            x = self.x[e]
            out[:, e] -= state_jvp(
                lambda s, x=x: self._run(x, "replace", s, None), (self.S[e],), (U[:, e],)
            )
        return self._flat(out)

    def p_inverse_adjoint(self, V: torch.Tensor) -> torch.Tensor:
        U = self._blocks(V)
        out = U.clone()
        for e in self._tiles(U.shape[0]):
            x = self.x[e]
            (g,) = state_vjp(lambda s, x=x: self._run(x, "replace", s, None), (self.S[e],), U[:, e])
            out[:, e] -= g
        return self._flat(out)

    # -- K -----------------------------------------------------------------------------------
    def immediate_vjp(self, V: torch.Tensor) -> dict[str, torch.Tensor]:
        U = self._blocks(V)
        k = U.shape[0]
        grads = zero_tangents(self.values, k)
        for e in self._tiles(k):
            x, s = self.x[e], self.S[e]
            (g,) = state_vjp(
                lambda th, x=x, s=s: self._run(x, "replace", s, th), (self.values,), U[:, e]
            )
            for n in grads:
                grads[n] += g[n]
        return grads

    def immediate_jvp(self, tangents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        k = next(iter(tangents.values())).shape[0]
        out = torch.zeros(k, self.B, self.D, dtype=self.dtype, device=self.device)
        for e in self._tiles(k):
            x, s = self.x[e], self.S[e]
            out[:, e] = state_jvp(
                lambda th, x=x, s=s: self._run(x, "replace", s, th),
                (self.values,),
                (dict(tangents),),
            )
        return self._flat(out)

    def k_jvp(self, V: torch.Tensor) -> torch.Tensor:
        return self.immediate_jvp(self.immediate_vjp(V))

    has_sites = False

    def rollout(self, values: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The states ``[B, D]`` at parameters ``values`` (default theta), differentiable."""
        return self._run(self.x, "record", None, values)

    def n_params(self) -> int:
        return sum(math.prod(v.shape) for v in self.values.values())

    def site_matrices(self) -> dict[str, tuple[torch.Tensor, int, int]]:
        """``{linear module: (Z [rows, d], rank, out_features)}``: the inputs (with a 1 column
        for a selected bias) of every ``nn.Linear`` whose weight is differentiated."""
        model = self.call.model
        pname = {id(p): n for n, p in model.named_parameters()}
        linears = {
            name: m
            for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and pname.get(id(m.weight)) in self.names
        }
        seen: dict[str, list[torch.Tensor]] = {n: [] for n in linears}

        def make_hook(name):
            def hook(module, args, out):
                seen[name].append(args[0].detach().reshape(-1, module.in_features))

            return hook

        handles = [m.register_forward_hook(make_hook(n)) for n, m in linears.items()]
        try:
            with torch.no_grad():
                for e in self._tiles(1):
                    functional_call(model, self.call.mapping(), (self.x[e],), strict=False)
        finally:
            for h in handles:
                h.remove()
        out = {}
        for name, m in linears.items():
            if not seen[name]:
                continue
            Z = torch.cat(seen[name])
            if m.bias is not None and pname.get(id(m.bias)) in self.names:
                Z = torch.cat([Z, torch.ones_like(Z[:, :1])], dim=1)
            out[name] = (Z, int(torch.linalg.matrix_rank(Z)), m.out_features)
        return out

    def uncovered_params(self, sites: Mapping[str, tuple]) -> int:
        """Number of differentiated scalars outside the Linear ``sites`` (those that ran)."""
        model = self.call.model
        pname = {id(p): n for n, p in model.named_parameters()}
        mods = dict(model.named_modules())
        covered = set()
        for name in sites:
            m = mods[name]
            covered.add(pname.get(id(m.weight)))
            if m.bias is not None:
                covered.add(pname.get(id(m.bias)))
        return sum(math.prod(v.shape) for n, v in self.values.items() if n not in covered)
