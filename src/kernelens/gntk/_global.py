"""``global_ntk``: the hidden-state NTK ``NTK_S = R P K P^T R^T`` of a model on a batch."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .._memory import element_size, resolve_memory_budget, tile_size
from .._validation import check_choice
from ..linalg import (
    IdentityOperator,
    LinearOperator,
    hutchpp_trace,
    lanczos_eigh,
    participation_ratio,
)
from ..linalg._common import Seed
from ..ntk._model import ModelCall, check_input
from ._cells import layer_cells
from ._modules import ModuleStateSystem
from ._recurrent import CustomCell, RecurrentSystem

__all__ = ["GlobalNTK", "SelectionOperator", "global_ntk"]

#: Routes for the K operator; "auto" takes "kronecker" where every parameter has sites.
K_METHODS = ("auto", "kronecker", "jvp")
_RECURRENT = (nn.RNN, nn.GRU, nn.LSTM)


class SelectionOperator(LinearOperator):
    """``R [m, n]``: picks the entries ``index [m]`` of a state vector (``R^T`` scatters)."""

    def __init__(self, index: torch.Tensor, n: int, *, dtype: torch.dtype, device) -> None:
        self.index = index

        def rmatmat(U: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(n, U.shape[1], dtype=U.dtype, device=U.device)
            out[index] = U
            return out

        super().__init__(
            (index.numel(), n), lambda V: V[index], rmatmat=rmatmat, dtype=dtype, device=device
        )


class GlobalNTK:
    """The global (hidden-state) NTK of a model on a batch, and its factors.

    Built by :func:`global_ntk`. All operators act on blocks ``[n, k]`` of state vectors in C
    order: the full implicit state (``full_state_shape``) for ``K``, ``P`` and ``P_inverse``,
    the selected states (``state_shape``) for ``ntk``.

    Attributes:
        state_shape: shape of the selected states, e.g. ``(B, T, H)``.
        full_state_shape: shape of the implicit state ``(B, T, L, C, H)`` (recurrent) or
            ``(B, D)`` (named submodules).
        states: the selected states themselves, ``[*state_shape]``.
        k_method: the route ``K`` takes: ``"kronecker"`` or ``"jvp"``.
    """

    def __init__(
        self,
        system: RecurrentSystem | ModuleStateSystem,
        *,
        full_state_shape: tuple[int, ...],
        state_shape: tuple[int, ...],
        index: torch.Tensor | None,
        k_method: str,
        time_axis: bool,
    ) -> None:
        self._system = system
        self.full_state_shape = full_state_shape
        self.state_shape = state_shape
        self.k_method = k_method
        self._time_axis = time_axis
        n = system.size
        kw = {"dtype": system.dtype, "device": system.device}
        self.select: LinearOperator = (
            IdentityOperator(n, **kw) if index is None else SelectionOperator(index, n, **kw)
        )
        flat = system.S.reshape(-1)
        self.states = (flat if index is None else flat[index]).reshape(state_shape)
        self.P = LinearOperator((n, n), system.p, rmatmat=system.p_adjoint, **kw)
        self.P_inverse = LinearOperator(
            (n, n), system.p_inverse, rmatmat=system.p_inverse_adjoint, **kw
        )
        kmat = system.k_kronecker if k_method == "kronecker" else system.k_jvp
        self.K = LinearOperator((n, n), kmat, symmetric=True, **kw)
        m = self.select.shape[0]
        self.ntk = LinearOperator((m, m), self._ntk_matmat, symmetric=True, **kw)

    def _ntk_matmat(self, V: torch.Tensor) -> torch.Tensor:
        W = self.P.rmatmat(self.select.rmatmat(V))
        return self.select.matmat(self.P.matmat(self.K.matmat(W)))

    # -- analysis ------------------------------------------------------------------------
    def spectrum(self, k: int, **lanczos: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` eigenpairs ``(evals [k], evecs [S, k])`` of NTK_S by thick-restart
        Lanczos (:func:`kernelens.linalg.lanczos_eigh`; keyword arguments go to it)."""
        return lanczos_eigh(self.ntk, k, **lanczos)

    def trace(self, num_matvecs: int = 99, *, seed: Seed = 0) -> torch.Tensor:
        """Hutch++ estimate of ``tr(NTK_S)`` with ``num_matvecs`` products (exact if that many
        products would form the operator: then the diagonal is summed)."""
        if num_matvecs >= self.ntk.shape[0]:
            return self.ntk.to_dense().diagonal().sum()
        return hutchpp_trace(self.ntk, num_matvecs, seed=seed)

    def effective_rank(self, num_matvecs: int = 99, *, seed: Seed = 0) -> torch.Tensor:
        """``tr(A)^2 / tr(A^2)`` of NTK_S (exact when ``3 num_matvecs >= S``, else Hutch++)."""
        return participation_ratio(self.ntk, num_matvecs=num_matvecs, seed=seed)

    def partial_trace(self, over: str) -> LinearOperator:
        """The partial trace of NTK_S over ``"time"`` (-> ``[B R, B R]``, examples x space) or
        over ``"examples"`` (-> ``[T R, T R]``, time x space), with ``R`` the per-step state
        size; matrix-free (one product costs ``T`` resp. ``B`` products of NTK_S)."""
        check_choice(over, "over", ("time", "examples"))
        if not self._time_axis:
            raise ValueError(
                "partial_trace needs states with a time axis (a recurrent model); the states "
                f"here have shape {self.state_shape} (named submodule outputs)."
            )
        B, T = self.state_shape[0], self.state_shape[1]
        R = math.prod(self.state_shape[2:])
        axis = 1 if over == "time" else 0
        n_traced = (B, T)[axis]
        kept = (T, B)[axis]
        ntk, dt = self.ntk, self.ntk.dtype
        per_col = element_size(dt) * 4 * B * T * R
        budget = resolve_memory_budget(None)

        def matmat(W: torch.Tensor) -> torch.Tensor:
            k = W.shape[1]
            Wk = W.T.reshape(k, kept, R)
            out = torch.zeros(k, kept, R, dtype=dt, device=W.device)
            chunk = tile_size(n_traced, per_col * k, budget)
            for s in range(0, n_traced, chunk):
                idx = range(s, min(n_traced, s + chunk))
                X = torch.zeros(len(idx), k, B, T, R, dtype=dt, device=W.device)
                for j, a in enumerate(idx):
                    if axis == 1:
                        X[j, :, :, a] = Wk
                    else:
                        X[j, :, a] = Wk
                Y = ntk.matmat(X.reshape(len(idx) * k, -1).T).T.reshape(len(idx), k, B, T, R)
                for j, a in enumerate(idx):
                    out += Y[j, :, :, a] if axis == 1 else Y[j, :, a]
            return out.reshape(k, -1).T

        return LinearOperator(
            (kept * R, kept * R), matmat, symmetric=True, dtype=dt, device=ntk.device
        )

    def kronecker_core(self) -> dict[str, tuple[torch.Tensor, int]]:
        """``{site: (Z [rows, d_z], rank(Z))}``: the weight-site variables of every site group
        (recurrent cells: ``[x_t, h_{t-1}, 1, ...]`` per gate group over all (example, time)
        rows; named-submodule models: the inputs of every differentiated ``nn.Linear``). The
        site Gram ``Z Z^T`` is never formed."""
        sites = self._system.site_matrices()
        if not sites:
            raise ValueError(
                "this model declares no weight sites (a custom cell_fn, or no differentiated "
                "nn.Linear / recurrent weights); its K runs through jvp/vjp instead."
            )
        return {name: (Z, rank) for name, (Z, rank, _) in sites.items()}

    def site_gram(self, site: str) -> LinearOperator:
        """The Gram ``G_g = Z_g Z_g^T [rows, rows]`` of one site group of
        :meth:`kronecker_core`, as a symmetric operator (never formed)."""
        core = self.kronecker_core()
        check_choice(site, "site", tuple(core))
        Z = core[site][0]
        return LinearOperator(
            (Z.shape[0], Z.shape[0]),
            lambda V: Z @ (Z.T @ V),
            symmetric=True,
            dtype=Z.dtype,
            device=Z.device,
        )

    def rank_bound(self) -> int:
        """An upper bound on ``rank(NTK_S)``: ``min(S, P, sum_g m_g rank(Z_g) + rest)``, with
        ``m_g`` the units a site group feeds and ``rest`` the parameters outside site groups."""
        sites = self._system.site_matrices()
        core = sum(m * rank for _, rank, m in sites.values())
        if isinstance(self._system, ModuleStateSystem):
            core += self._system.uncovered_params(sites)
        elif not self._system.has_sites:
            core = self._system.n_params()
        return int(min(self.ntk.shape[0], self._system.n_params(), core))

    def explain(self) -> str:
        """Which route each operator takes."""
        kind = type(self._system).__name__
        return (
            f"GlobalNTK over states {self.state_shape} (implicit state {self.full_state_shape}, "
            f"{kind}); P: forward/backward substitution by per-step jvp/vjp; K: {self.k_method}"
        )

    def __repr__(self) -> str:
        return f"GlobalNTK(state_shape={self.state_shape}, K={self.k_method!r})"


# -- construction -------------------------------------------------------------------------
def _check_x(x: Any, dtype: torch.dtype, device: torch.device, ndim: int | None) -> torch.Tensor:
    x = check_input(x, "x")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(
            f"x must be [B, T, I] (batch first) for a recurrent model, got shape {tuple(x.shape)}."
        )
    if x.is_floating_point() and x.dtype != dtype:
        raise TypeError(
            f"x has dtype {x.dtype} but the parameters are {dtype}; cast one of them "
            f"(e.g. x.to({dtype}))."
        )
    if x.device != device:
        raise ValueError(f"x is on {x.device} but the parameters on {device}; move x there.")
    return x


def _k_method(method: str, system) -> str:
    check_choice(method, "method", K_METHODS)
    if method == "auto":
        return "kronecker" if system.has_sites else "jvp"
    if method == "kronecker" and not system.has_sites:
        raise ValueError(
            "method='kronecker' needs every differentiated parameter to be a weight of a known "
            "cell (nn.RNN / nn.GRU / nn.LSTM); this model has none, so use method='jvp' or 'auto'."
        )
    return method


def _check_agrees(S_last: torch.Tensor, reference: torch.Tensor, name: str) -> None:
    """Guard: the cell equations reproduce the module's own forward pass."""
    tol = 1e-10 if S_last.dtype == torch.float64 else 1e-4
    err = float((S_last - reference).abs().max())
    scale = max(1.0, float(reference.abs().max()))
    if err > tol * scale:
        raise ValueError(
            f"the {name} module's forward pass differs from the standard cell equations by "
            f"{err:.3g}; kernelens.gntk supports the stock torch modules (a subclass that "
            "changes forward() is not one). Wrap it and pass states=[...] instead."
        )


def _recurrent(module, x, states, params, memory_budget, method) -> GlobalNTK:
    if not isinstance(module, _RECURRENT):
        raise ValueError(
            f"unsupported recurrent module {type(module).__name__}; global_ntk supports nn.RNN, "
            "nn.GRU and nn.LSTM, or any model with states=[submodule names]."
        )
    cells = layer_cells(module)
    call = ModelCall(module, params=params)
    x = _check_x(x, call.dtype, call.device, 3)
    if x.shape[2] != module.input_size:
        raise ValueError(
            f"x has {x.shape[2]} features per step but the module's input_size is "
            f"{module.input_size}; x must be [B, T, {module.input_size}]."
        )
    lstm = isinstance(module, nn.LSTM)
    if states is None:
        states = "h"
    check_choice(states, "states", ("h", "h+c") if lstm else ("h",))
    B, T = x.shape[:2]
    L, C, H = module.num_layers, cells[0].channels, module.hidden_size
    h0 = torch.zeros(L, B, C * H, dtype=call.dtype, device=call.device)
    fixed = {k: v for k, v in call.overrides.items()}
    system = RecurrentSystem(cells, call.values, fixed, x, h0, resolve_memory_budget(memory_budget))
    with torch.no_grad():
        ref = module(x)[0]
    _check_agrees(system.S[:, :, -1, :H], ref, type(module).__name__)
    full = (B, T, L, C, H)
    keep_c = 2 if states == "h+c" else 1
    if keep_c == C:
        index = None
    else:
        index = torch.arange(system.size, device=call.device).reshape(B, T, L, C, H)[:, :, :, 0]
        index = index.reshape(-1)
    shape = (B, T) + ((L,) if L > 1 else ()) + ((keep_c,) if keep_c > 1 else ()) + (H,)
    return GlobalNTK(
        system,
        full_state_shape=full,
        state_shape=shape,
        index=index,
        k_method=_k_method(method, system),
        time_axis=True,
    )


def _custom(cell_fn, x, h0, params, memory_budget, method) -> GlobalNTK:
    if not isinstance(params, Mapping) or not params:
        raise TypeError(
            "a custom cell needs params={name: tensor}, the parameters theta it is differentiated "
            f"by (cell_fn(h, x_t, params)); got {type(params).__name__}."
        )
    for n, v in params.items():
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise TypeError(f"params[{n!r}] must be a floating tensor.")
    values = {n: v.detach() for n, v in params.items()}
    first = next(iter(values.values()))
    x = _check_x(x, first.dtype, first.device, 3)
    if not isinstance(h0, torch.Tensor):
        raise TypeError("a custom cell needs h0=, the initial state [H] or [B, H].")
    B, T = x.shape[:2]
    if h0.ndim == 1:
        h0 = h0.expand(B, -1)
    if h0.ndim != 2 or h0.shape[0] != B:
        raise ValueError(f"h0 must be [H] or [B, H] with B = {B}, got {tuple(h0.shape)}.")
    check_input(h0, "h0")
    H = h0.shape[1]
    cell = CustomCell(cell_fn, H, x.shape[2])
    system = RecurrentSystem(
        [cell],
        values,
        {},
        x,
        h0.detach()[None].to(first.dtype),
        resolve_memory_budget(memory_budget),
    )
    # guard: the cell treats the (example, time) rows independently (K and P^-1 use them stacked)
    with torch.no_grad():
        stacked = cell.step(system.S_prev[:, :, 0].reshape(B * T, H), x.reshape(B * T, -1), values)
    _check_agrees(stacked.reshape(B, T, H), system.S[:, :, 0], "custom cell")
    return GlobalNTK(
        system,
        full_state_shape=(B, T, H),
        state_shape=(B, T, H),
        index=None,
        k_method=_k_method(method, system),
        time_axis=True,
    )


def global_ntk(
    model: nn.Module | Callable[..., torch.Tensor],
    x: torch.Tensor,
    *,
    states: str | Sequence[str] | None = None,
    h0: torch.Tensor | None = None,
    params: Sequence[str | nn.Parameter] | Mapping[str, torch.Tensor] | None = None,
    method: str = "auto",
    memory_budget: int | float | None = None,
) -> GlobalNTK:
    """The global empirical NTK over hidden states, ``NTK_S = J J^T = R P K P^T R^T``.

    Args:
        model: one of
            - ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` with ``batch_first=True``: the states are
              every layer's output sequence (and the cell state with ``states="h+c"``);
            - any ``nn.Module`` with ``states=[submodule names]``: the outputs of those
              submodules, concatenated per example in the order given;
            - a step function ``cell_fn(h [B, H], x_t [B, I], params) -> h [B, H]`` with
              ``h0`` and ``params`` (a dict of tensors): the states are ``h_1..h_T``.
        x: inputs ``[B, T, I]`` (recurrent) or ``[B, ...]`` (any model).
        states: ``"h"`` (default) or ``"h+c"`` (LSTM), or a list of submodule names.
        h0: initial state ``[H]`` or ``[B, H]`` (custom cells; modules start from zeros).
        params: parameters theta (names or Parameters of the module; default all trainable),
            or the dict of a custom cell.
        method: route of ``K``: ``"auto"`` (Kronecker core where every parameter is a weight
            of a known cell, else jvp/vjp), ``"kronecker"`` or ``"jvp"``.
        memory_budget: bytes of working memory per tile of examples (default 2 GiB or
            ``$KERNELENS_MEMORY_BUDGET``).

    Returns:
        :class:`GlobalNTK`, whose ``ntk`` is a symmetric :class:`~kernelens.linalg.LinearOperator`.
    """
    if isinstance(model, nn.Module):
        if h0 is not None:
            raise ValueError(
                "h0 is for custom step functions; recurrent modules start from zero states."
            )
        if isinstance(model, nn.RNNBase) and (states is None or isinstance(states, str)):
            return _recurrent(model, x, states, params, memory_budget, method)
        if states is None or isinstance(states, str):
            raise ValueError(
                f"unsupported module {type(model).__name__} without states=: global_ntk takes "
                "nn.RNN / nn.GRU / nn.LSTM directly; for any other model pass "
                "states=[names of submodules whose outputs are the states], e.g. "
                "states=['blocks.0', 'blocks.1']."
            )
        call = ModelCall(model, params=params)
        x = _check_x(x, call.dtype, call.device, None)
        system = ModuleStateSystem(call, x, states, resolve_memory_budget(memory_budget))
        return GlobalNTK(
            system,
            full_state_shape=(system.B, system.D),
            state_shape=(system.B, system.D),
            index=None,
            k_method=_k_method(method, system),
            time_axis=False,
        )
    if callable(model):
        return _custom(model, x, h0, params, memory_budget, method)
    raise TypeError(
        f"model must be an nn.Module or a step function cell_fn(h, x_t, params), got "
        f"{type(model).__name__}."
    )
