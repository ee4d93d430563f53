"""``TrainingMonitor``: run a linearised copy of a network beside the real one, in the user's
own training loop, and record how far the two drift apart."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
from torch import nn

from .._validation import as_tensor, check_positive_int
from ..ntk import empirical_ntk
from ..ntk._model import check_input
from ._hessian import hessian_top_eigenvalue
from .linearize import LinearizedModel, linearize

__all__ = ["HISTORY_KEYS", "TrainingMonitor", "centered_alignment", "kernel_distance", "mse"]

#: The keys of :attr:`TrainingMonitor.history` (``hessian_top`` only with ``hessian=True``).
HISTORY_KEYS = (
    "step",
    "kernel_distance",
    "kernel_velocity",
    "kernel_alignment",
    "param_distance",
    "train_loss",
    "lin_train_loss",
    "val_loss",
    "lin_val_loss",
    "deviation",
)


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``0.5 ||f - y||^2 / y.size`` (neural-tangents' convention)."""
    return 0.5 * ((out.reshape(y.shape) - y) ** 2).mean()


def kernel_distance(k0: torch.Tensor, k1: torch.Tensor) -> float:
    """``1 - <K0, K1>_F / (||K0||_F ||K1||_F)`` (Fort et al. 2020): 0 for proportional
    kernels, up to 1 for orthogonal ones."""
    den = float(k0.norm() * k1.norm())
    if den == 0:
        return float("nan")
    return 1.0 - float((k0 * k1).sum()) / den


def centered_alignment(k: torch.Tensor, y: torch.Tensor) -> float:
    """Centred kernel-target alignment ``<HKH, H Y Y^T H> / (||HKH|| ||H Y Y^T H||)``
    (Cortes et al. 2012), ``y`` of shape ``[N]`` or ``[N, O]``."""
    y2 = y.reshape(y.shape[0], -1).to(k.dtype)
    kc = k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()
    yc = y2 - y2.mean(0, keepdim=True)
    t = yc @ yc.T
    den = float(kc.norm() * t.norm())
    return float((kc * t).sum()) / den if den > 0 else float("nan")


class TrainingMonitor:
    """Train a :func:`linearize` copy beside ``model`` and record kernel and loss diagnostics.

    Create it before the first optimiser step, then call :meth:`step` after every step::

        mon = TrainingMonitor(model, x_probe, y_probe, x_val, y_val, every=5)
        for xb, yb in batches:
            opt.zero_grad(); mse(model(xb), yb).backward(); opt.step()
            mon.step(opt, xb, yb)
        report = diagnose(mon)

    The linearised copy is trained on the same batch with a clone of ``optimizer`` (same class,
    the hyper-parameters of its parameter groups copied at every step, so schedulers carry
    over; its own state), on the loss ``loss_fn`` (default :func:`mse`). Train the real model
    on the same loss for the comparison to mean anything.

    Args:
        model: the network being trained (outputs ``[N, O]`` or ``[N]``).
        x_probe, y_probe: a fixed subset of the training data ``[P, ...]``, ``[P, O]``; the
            kernels ``[P, P]`` and the train losses are measured on it.
        x_val, y_val: optional held-out data for the validation losses.
        every: record every ``every`` steps (and at step 0).
        loss_fn: ``loss_fn(output, target) -> scalar`` for the linearised copy and the
            recorded losses.
        hessian: also record the top eigenvalue of the probe-loss Hessian (Lanczos on
            Hessian-vector products; costs tens of double-backward passes per record).

    Attributes:
        history: ``dict[str, list[float]]`` with keys :data:`HISTORY_KEYS` (plus
            ``"hessian_top"``): ``kernel_distance`` ``S(t) = 1 - <K_0, K_t> / (||K_0||
            ||K_t||)`` on the trace NTK of the probe set; ``kernel_velocity`` ``S(K_prev, K_t)
            / dt`` (NaN at step 0); ``kernel_alignment`` centred alignment of ``K_t`` with
            ``Y Y^T``; ``param_distance`` ``||theta_t - theta_0|| / ||theta_0||``; real and
            linearised train (probe) and validation losses; ``deviation`` the RMS difference
            between the real and linearised outputs on probe and validation points, relative
            to the RMS initial residual on the probe set. Kernels are evaluated in ``eval()``
            mode.
        linear: the :class:`LinearizedModel` being trained.
    """

    def __init__(
        self,
        model: nn.Module,
        x_probe: torch.Tensor,
        y_probe: torch.Tensor,
        x_val: torch.Tensor | None = None,
        y_val: torch.Tensor | None = None,
        every: int = 1,
        *,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = mse,
        hessian: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        self.model = model
        self.x_probe = check_input(x_probe, "x_probe")
        self.y_probe = self._targets(y_probe, self.x_probe, "y_probe")
        if (x_val is None) != (y_val is None):
            raise ValueError("pass both x_val and y_val, or neither.")
        self.x_val = None if x_val is None else check_input(x_val, "x_val")
        self.y_val = None if y_val is None else self._targets(y_val, self.x_val, "y_val")
        self.every = check_positive_int(every, "every")
        self.loss_fn = loss_fn
        self.hessian = bool(hessian)
        self.steps = 0
        with _eval_mode(model):
            self.linear: LinearizedModel = linearize(model)
            self._k0 = empirical_ntk(model, self.x_probe, output="trace")
            f0 = model(self.x_probe).detach()
        self._scale = float(((f0.reshape(self.y_probe.shape) - self.y_probe) ** 2).mean().sqrt())
        self._theta0 = torch.cat([p.detach().reshape(-1) for p in self._params()]).clone()
        self._k_prev = self._k0
        self._step_prev = 0
        self._opt: torch.optim.Optimizer | None = None
        self._user_opt: torch.optim.Optimizer | None = None
        keys = HISTORY_KEYS + (("hessian_top",) if self.hessian else ())
        self.history: dict[str, list[float]] = {k: [] for k in keys}
        self._record()

    @staticmethod
    def _targets(y, x, name):
        t = as_tensor(y, name, ndim=(1, 2), dtype=None)
        if t.shape[0] != x.shape[0]:
            raise ValueError(
                f"{name} has {t.shape[0]} rows but its inputs have {x.shape[0]}; pass one "
                "target row per example."
            )
        return t

    def _params(self) -> list[torch.Tensor]:
        named = dict(self.model.named_parameters())
        return [named[n] for n in self.linear.names]

    # -- the optimiser clone ---------------------------------------------------------------
    def _clone_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        by_id = {id(p): n for n, p in self.model.named_parameters()}
        lin = {n: self.linear.theta[self.linear._keys[n]] for n in self.linear.names}
        groups = []
        for g in optimizer.param_groups:
            params = []
            for p in g["params"]:
                name = by_id.get(id(p))
                if name is None or name not in lin:
                    raise ValueError(
                        "the optimizer holds a tensor that is not a trainable parameter of the "
                        "monitored model; build it from model.parameters() (with requires_grad "
                        "set before creating the monitor)."
                    )
                params.append(lin[name])
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": params})
        cls = type(optimizer)
        accepted = inspect.signature(cls.__init__).parameters
        # required constructor arguments (e.g. a custom optimiser's lr) from its defaults
        kwargs = {k: v for k, v in optimizer.defaults.items() if k in accepted and k != "params"}
        try:
            return cls(groups, **kwargs)
        except TypeError as exc:
            raise TypeError(
                f"could not clone {cls.__name__} from its parameter groups ({exc}); the monitor "
                "needs an optimizer class constructible as cls(param_groups, **defaults)."
            ) from exc

    def _sync(self, optimizer: torch.optim.Optimizer) -> None:
        for mine, theirs in zip(self._opt.param_groups, optimizer.param_groups):
            for k, v in theirs.items():
                if k != "params":
                    mine[k] = v

    def step(self, optimizer: torch.optim.Optimizer, x_batch, y_batch) -> None:
        """Advance the linearised copy by one step of (a clone of) ``optimizer`` on the batch
        the real model was just trained on, and record every ``every`` steps."""
        if self._opt is None:
            self._opt = self._clone_optimizer(optimizer)
            self._user_opt = optimizer
        elif optimizer is not self._user_opt:
            raise ValueError("step() received a different optimizer than on the first call.")
        if len(self._opt.param_groups) != len(optimizer.param_groups):
            raise ValueError("the optimizer's parameter groups changed since the first step.")
        self._sync(optimizer)
        xb = check_input(x_batch, "x_batch")
        yb = self._targets(y_batch, xb, "y_batch").to(self.y_probe.dtype)
        self._opt.zero_grad()
        with torch.enable_grad():
            loss = self.loss_fn(self.linear(xb), yb)
            loss.backward()
        self._opt.step()
        self.steps += 1
        if self.steps % self.every == 0:
            self._record()

    # -- recording -------------------------------------------------------------------------
    def _record(self) -> None:
        h = self.history
        with _eval_mode(self.model), torch.no_grad():
            k = empirical_ntk(self.model, self.x_probe, output="trace")
            f_p = self.model(self.x_probe).detach().reshape(self.y_probe.shape)
            l_p = self.linear(self.x_probe).detach().reshape(self.y_probe.shape)
            if self.x_val is not None:
                f_v = self.model(self.x_val).detach().reshape(self.y_val.shape)
                l_v = self.linear(self.x_val).detach().reshape(self.y_val.shape)
        theta = torch.cat([p.detach().reshape(-1) for p in self._params()])
        dt = self.steps - self._step_prev
        h["step"].append(float(self.steps))
        h["kernel_distance"].append(kernel_distance(self._k0, k))
        h["kernel_velocity"].append(kernel_distance(self._k_prev, k) / dt if dt else math.nan)
        h["kernel_alignment"].append(centered_alignment(k, self.y_probe))
        h["param_distance"].append(
            float((theta - self._theta0).norm() / self._theta0.norm().clamp_min(1e-300))
        )
        h["train_loss"].append(float(self.loss_fn(f_p, self.y_probe)))
        h["lin_train_loss"].append(float(self.loss_fn(l_p, self.y_probe)))
        diffs = [(f_p - l_p).reshape(-1)]
        if self.x_val is not None:
            h["val_loss"].append(float(self.loss_fn(f_v, self.y_val)))
            h["lin_val_loss"].append(float(self.loss_fn(l_v, self.y_val)))
            diffs.append((f_v - l_v).reshape(-1))
        else:
            h["val_loss"].append(math.nan)
            h["lin_val_loss"].append(math.nan)
        rms = float(torch.cat(diffs).pow(2).mean().sqrt())
        h["deviation"].append(rms / self._scale if self._scale > 0 else math.nan)
        if self.hessian:
            with _eval_mode(self.model):
                h["hessian_top"].append(
                    hessian_top_eigenvalue(self.model, self.x_probe, self.y_probe, self.loss_fn)
                )
        self._k_prev, self._step_prev = k, self.steps


class _eval_mode:
    """Context: ``module.eval()`` inside, the previous training flags restored after."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __enter__(self):
        self.flags = {m: m.training for m in self.module.modules()}
        self.module.eval()

    def __exit__(self, *exc):
        for m, flag in self.flags.items():
            m.training = flag
