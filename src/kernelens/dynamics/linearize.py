"""``linearize(model)``: the first-order Taylor expansion of a network in its parameters, as a
trainable ``nn.Module``: ``f_lin(x; theta) = f(x; theta0) + J(x; theta0) (theta - theta0)``."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..ntk._model import ModelCall, check_input
from ..ntk._param_jvp import linear_jvp

__all__ = ["LinearizedModel", "linearize"]


def _key(name: str) -> str:
    return name.replace(".", "__")


class LinearizedModel(nn.Module):
    """``f0(x) + J(x) (theta - theta0)`` around the parameters ``theta0`` a model had when it
    was linearised.

    The trainable parameters ``theta`` start at ``theta0`` and are exposed through
    :meth:`parameters` (so ``torch.optim.SGD(lin.parameters(), lr)`` trains the linear model);
    ``theta0`` is stored as buffers. Every forward pass is one Jacobian-vector product through
    :mod:`kernelens.ntk`'s engine (forward-mode AD); no Jacobian is ever formed. The expansion
    point is the model in ``eval()`` mode (fixed BatchNorm statistics, no dropout): a
    linearisation needs a deterministic network whose examples do not interact.

    Attributes:
        names: the linearised parameter names, in ``model.named_parameters()`` order.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        base = copy.deepcopy(model).eval()
        call = ModelCall(base)  # checks batch independence; selects trainable parameters
        self.__dict__["_base"] = base  # held unregistered: its Parameters are not ours
        self.names = tuple(call.names)
        self._keys = {n: _key(n) for n in self.names}
        self.theta = nn.ParameterDict(
            {self._keys[n]: nn.Parameter(call.values[n].clone()) for n in self.names}
        )
        for n in self.names:
            self.register_buffer(f"theta0__{self._keys[n]}", call.values[n].clone())
        for p in base.parameters():
            p.requires_grad_(False)

    def _apply(self, fn, recurse=True):  # keep the expansion model on our device / dtype
        self._base._apply(fn)
        return super()._apply(fn, recurse)

    def theta0(self) -> dict[str, torch.Tensor]:
        """The expansion point ``{name: tensor}``."""
        return {n: getattr(self, f"theta0__{self._keys[n]}") for n in self.names}

    def delta(self) -> dict[str, torch.Tensor]:
        """``theta - theta0`` per parameter (differentiable in ``theta``)."""
        t0 = self.theta0()
        return {n: self.theta[self._keys[n]] - t0[n] for n in self.names}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``f0(x) + J(x) (theta - theta0)``, with the shape of the original model's output."""
        x = check_input(x, "x")
        f0, jt = linear_jvp(self._base, x, self.theta0(), self.delta())
        return f0 + jt

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.theta.values())
        return f"linearised {type(self._base).__name__} with {n} parameters"


def linearize(model: nn.Module) -> LinearizedModel:
    """The linearisation of ``model`` around its current parameters (all with
    ``requires_grad``), as a trainable :class:`LinearizedModel`.

    Example::

        lin = linearize(net)
        opt = torch.optim.SGD(lin.parameters(), lr=0.1)
        loss = 0.5 * ((lin(x) - y) ** 2).mean(); loss.backward(); opt.step()
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    return LinearizedModel(model)
