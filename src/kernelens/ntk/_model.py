"""Checking models and inputs, selecting parameters, and calling a model functionally.

Every engine entry point goes through :class:`ModelCall`: it validates the model and the
inputs once, resolves ``params=`` to parameter names in model order, and evaluates the model
with ``torch.func.functional_call`` at the requested parameter values, so the module itself
is never mutated (no parameter, buffer, ``.grad`` or training flag changes).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

__all__ = [
    "BatchCouplingError",
    "ModelCall",
    "RandomForwardError",
    "check_input",
    "flatten_output",
    "select_output",
]


class BatchCouplingError(ValueError):
    """The model's output for one example depends on the other examples of the batch, so
    per-example gradients (and the NTK) are undefined."""


class RandomForwardError(ValueError):
    """The model's forward is random (two forwards of the same inputs differ), so its NTK is
    not a fixed kernel."""


def _check_batch_independent(model: nn.Module) -> None:
    """Raise if a module couples the examples of a batch or is random (per-example gradients
    are then undefined)."""
    for name, mod in model.named_modules():
        label = name or "<root>"
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            if mod.training or mod.running_mean is None:
                raise BatchCouplingError(
                    f"module {label!r} ({type(mod).__name__}) normalises with batch statistics, "
                    "which couples the examples of a batch, so per-example gradients (and the "
                    "NTK) are undefined; call model.eval() first (and use "
                    "track_running_stats=True)."
                )
        if isinstance(mod, nn.modules.dropout._DropoutNd) and mod.training and mod.p > 0:
            raise RandomForwardError(
                f"module {label!r} ({type(mod).__name__}) is in training mode, so the network "
                "is random and its NTK is not a fixed kernel; call model.eval() first."
            )
        if isinstance(mod, nn.MultiheadAttention) and mod.training and mod.dropout > 0:
            raise RandomForwardError(
                f"module {label!r} (MultiheadAttention) applies attention dropout in training "
                "mode; call model.eval() first."
            )


class SelectOutput(nn.Module):
    """``model`` whose output is one entry of what ``model`` returns (see
    :func:`select_output`)."""

    def __init__(self, model: nn.Module, key: str | int) -> None:
        super().__init__()
        self.model = model
        self.key = key

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.model(*args, **kwargs)
        key = self.key
        try:
            return out[key]
        except (KeyError, IndexError, TypeError) as exc:
            if isinstance(key, str) and hasattr(out, key):
                return getattr(out, key)
            keys = list(out.keys()) if hasattr(out, "keys") else None
            have = f"its keys are {keys}" if keys is not None else f"it is a {type(out).__name__}"
            if isinstance(out, tuple | list):
                have = f"it is a {type(out).__name__} of {len(out)} entries"
            raise ValueError(
                f"select_output could not take {key!r} from the model's output: {have}."
            ) from exc

    def extra_repr(self) -> str:
        return f"key={self.key!r}"


def select_output(model: nn.Module, key_or_index: str | int) -> nn.Module:
    """Wrap a model whose forward returns a dict, a tuple or a HuggingFace-style
    ``ModelOutput`` so that it returns the one tensor the NTK should use.

    Args:
        model: the model; it becomes the submodule ``model`` of the wrapper, so parameter
            names gain the prefix ``"model."`` (``params=["model.lin.weight"]``).
        key_or_index: a key (``"logits"``; an attribute name also works) or an index
            (``0``) into the output.

    Returns:
        an ``nn.Module`` sharing ``model``'s parameters (no copy).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(key_or_index, str | int) or isinstance(key_or_index, bool):
        raise TypeError(
            f"key_or_index must be a key (str) or an index (int), got {key_or_index!r}."
        )
    return SelectOutput(model, key_or_index)


def check_input(x: Any, name: str, *, finite: bool = True) -> torch.Tensor:
    """Return ``x`` as a tensor with a leading batch axis (float or integer)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor with the batch on the first axis, got "
            f"{type(x).__name__}; convert it with torch.as_tensor({name})."
        )
    if x.ndim == 0:
        raise ValueError(f"{name} must have a batch axis, got a 0-d tensor.")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); pass at least one example.")
    if finite and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf; remove or impute them first.")
    return x


def flatten_output(y: Any, n: int, where: str) -> torch.Tensor:
    """Return the model output as ``[n, O]``: ``[n]`` becomes ``[n, 1]`` and ``[n, d1, d2, ...]``
    is flattened in C order to ``[n, d1 * d2 * ...]``."""
    if not isinstance(y, torch.Tensor):
        hint = "'logits'" if isinstance(y, Mapping) or hasattr(y, "keys") else "0"
        raise TypeError(
            f"the model returned {type(y).__name__} on {where}; it must return one tensor "
            "[N, O] or [N]. Select the output you mean with kernelens.ntk.select_output, "
            f"e.g. select_output(model, {hint}) (parameter names then start with 'model.')."
        )
    if y.ndim == 0 or y.shape[0] != n:
        raise ValueError(
            f"the model output on {where} has shape {tuple(y.shape)}, but it must be [N, O] or "
            f"[N] with N = {n} (the batch size): the NTK needs one output row per example."
        )
    if not y.is_floating_point():
        raise TypeError(f"the model output on {where} has dtype {y.dtype}; it must be floating.")
    return y.reshape(n, -1)


class ModelCall:
    """A validated model with a parameter selection and parameter values to evaluate at.

    Args:
        model: any ``nn.Module`` mapping a batch ``[N, ...]`` to ``[N, O]`` or ``[N]``.
        params: parameter names or ``nn.Parameter`` objects to differentiate; default all
            parameters with ``requires_grad``. Stored in ``model.named_parameters()`` order.
        weights: optional map name -> tensor overriding parameters (or buffers) of the model.

    Attributes:
        names: selected parameter names, model order.
        values: name -> tensor (detached) for every selected parameter, at ``weights``.
        overrides: name -> tensor (detached) of every non-selected parameter (from
            ``weights`` where given) and of the buffers given in ``weights``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        params: Sequence[str | nn.Parameter] | None = None,
        weights: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"model must be a torch.nn.Module, got {type(model).__name__}; wrap plain "
                "functions in an nn.Module whose parameters are nn.Parameter attributes."
            )
        _check_batch_independent(model)
        self.model = model
        named = dict(model.named_parameters())
        self.all_names = tuple(named)
        self.names = self._select(named, params)
        weights = {} if weights is None else dict(weights)
        known = set(named) | {n for n, _ in model.named_buffers()}
        for key, val in weights.items():
            if key not in known:
                raise ValueError(self._unknown("weights", key, known))
            if not isinstance(val, torch.Tensor):
                raise TypeError(f"weights[{key!r}] must be a tensor, got {type(val).__name__}.")
            ref = named.get(key)
            if ref is not None and val.shape != ref.shape:
                raise ValueError(
                    f"weights[{key!r}] has shape {tuple(val.shape)} but the parameter has "
                    f"shape {tuple(ref.shape)}."
                )
        self.values = {n: weights.get(n, named[n]).detach() for n in self.names}
        # every other parameter enters detached, so no graph reaches the module's Parameters
        self.overrides = {n: p.detach() for n, p in named.items() if n not in self.values}
        self.overrides.update({k: v.detach() for k, v in weights.items() if k not in self.values})
        self.shapes = {n: self.values[n].shape for n in self.names}
        first = self.values[self.names[0]]
        self.dtype = first.dtype
        self.device = first.device

    @staticmethod
    def _unknown(arg: str, key: str, known: Sequence[str] | set[str]) -> str:
        close = difflib.get_close_matches(key, list(known), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        return (
            f"{arg} names {key!r}, which is not a parameter of the model.{hint} Valid names are "
            "those of model.named_parameters()."
        )

    def _select(
        self, named: dict[str, nn.Parameter], params: Sequence[str | nn.Parameter] | None
    ) -> tuple[str, ...]:
        if params is None:
            chosen = [n for n, p in named.items() if p.requires_grad]
            if not chosen:
                raise ValueError(
                    "the model has no trainable parameters (none with requires_grad=True); "
                    "pass params= to choose parameters explicitly."
                )
            return tuple(chosen)
        if isinstance(params, str | nn.Parameter):
            params = [params]
        by_id = {id(p): n for n, p in named.items()}
        wanted: set[str] = set()
        for p in params:
            if isinstance(p, str):
                if p not in named:
                    raise ValueError(self._unknown("params", p, named))
                wanted.add(p)
            elif isinstance(p, torch.Tensor):
                if id(p) not in by_id:
                    raise ValueError(
                        "params holds a tensor that is not a parameter of the model; pass "
                        "names from model.named_parameters() or the Parameter objects."
                    )
                wanted.add(by_id[id(p)])
            else:
                raise TypeError(
                    f"params entries must be names or nn.Parameter objects, got {type(p).__name__}."
                )
        if not wanted:
            raise ValueError("params is empty; select at least one parameter or pass None.")
        return tuple(n for n in named if n in wanted)

    def mapping(self, values: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The functional_call dictionary: overrides plus selected values (or ``values``)."""
        out = dict(self.overrides)
        out.update(self.values if values is None else values)
        return out

    def __call__(
        self, x: torch.Tensor, values: Mapping[str, torch.Tensor] | None = None, *, where: str
    ) -> torch.Tensor:
        """``f(x)`` as ``[N, O]`` at the selected values (or ``values``), model errors wrapped."""
        try:
            y = functional_call(self.model, self.mapping(values), (x,), strict=False)
        except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:
            if _is_transform_error(exc):
                raise
            raise ValueError(
                f"the model rejected {where} (shape {tuple(x.shape)}, dtype {x.dtype}; model "
                f"parameters are {self.dtype}): {type(exc).__name__}: {exc}"
            ) from exc
        return flatten_output(y, x.shape[0], where)


def _is_transform_error(exc: BaseException) -> bool:
    """Whether ``exc`` says a torch.func transform (vmap) is unsupported, not a model error."""
    msg = str(exc)
    return "Batching rule not implemented" in msg or "vmap" in msg or "functorch" in msg
