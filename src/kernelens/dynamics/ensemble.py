"""The distribution of outputs of an infinite ensemble of infinitely wide networks trained by
gradient descent on the squared loss (neural-tangents 0.6.5
``predict.gradient_descent_mse_ensemble``).

With the NNGP ``K`` (the covariance of outputs at initialisation) and the NTK ``Theta``, a
network trained for time ``t`` is Gaussian over initialisations. Writing ``A_g(t) = V
diag((1 - exp(-lambda t / n)) / lambda) V^T`` in the eigenbasis of the (regularised) train
kernel ``g`` (``n = y.size``, ``t`` scaled by the learning rate), the test mean is
``g_td A_g y`` and the covariances are

* ``get="nngp"``: ``K_tt - K_td A_K(2 t) K_td^T`` (Bayesian posterior as t -> infinity);
* ``get="ntk"``: ``K_tt + T^T K_dd T - (Theta_td A K_td^T + transpose)`` with
  ``T = A_Theta(t) Theta_td^T`` (Lee et al. 2019, eq. 16).

At ``t = None`` the limits are taken through a linear solve with the regularised kernel.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from .._validation import as_tensor, check_nonnegative, check_positive
from ._checks import check_kernel, check_targets, check_times
from ._spectral import KernelEigh, flow_factors

__all__ = ["EnsemblePredictor", "Gaussian", "gradient_descent_mse_ensemble"]

_GETS = ("nngp", "ntk")


class Gaussian(NamedTuple):
    """``(mean [..., M, O], covariance [..., M, M])`` of the ensemble's outputs."""

    mean: torch.Tensor
    covariance: torch.Tensor


Gaussians = namedtuple("Gaussians", _GETS)


def _kernel_source(net: Any) -> Callable[[torch.Tensor, torch.Tensor, tuple[str, ...]], dict]:
    """``(x1, x2, get) -> {name: [N1, N2]}`` from a kernelens.infinite net (``.kernel``) or a
    callable ``kernel_fn(x1, x2, get)`` returning an object with ``.nngp`` / ``.ntk``."""
    fn = getattr(net, "kernel", None)
    if fn is None and callable(net):
        fn = net
    if fn is None or not callable(fn):
        raise TypeError(
            "net must be a kernelens.infinite network (with .kernel(x1, x2, get=...)) or a "
            f"callable kernel_fn(x1, x2, get); got {type(net).__name__}."
        )

    def kernels(x1, x2, get):
        out = fn(x1, x2, get=get)
        res = {}
        for g in get:
            val = out if isinstance(out, torch.Tensor) and len(get) == 1 else getattr(out, g, None)
            if val is None:
                raise ValueError(f"the kernel function returned no {g!r} kernel for get={get}.")
            res[g] = torch.as_tensor(val)
        return res

    return kernels


def _canonical_get(get: Any) -> tuple[tuple[str, ...], bool]:
    """``(names, single)``: the requested kernels and whether one name (not a tuple) was given."""
    if get is None:
        return _GETS, False
    if isinstance(get, str):
        names, single = (get,), True
    else:
        names, single = tuple(get), False
    for g in names:
        if g not in _GETS:
            raise ValueError(f"get must be 'nngp', 'ntk', a tuple of them or None, got {g!r}.")
    if not names:
        raise ValueError("get is empty; pass 'nngp', 'ntk' or both.")
    return names, single


class EnsemblePredictor:
    """The function returned by :func:`gradient_descent_mse_ensemble`:
    ``ens(t=None, x_test=None, get=None, compute_cov=False)``."""

    def __init__(self, net, x_train, y_train, learning_rate, diag_reg, diag_reg_absolute_scale):
        self._kernels = _kernel_source(net)
        self._x = as_tensor(x_train, "x_train", dtype=None)
        self.learning_rate = check_positive(learning_rate, "learning_rate")
        self.diag_reg = check_nonnegative(diag_reg, "diag_reg")
        self.absolute = bool(diag_reg_absolute_scale)
        self._y_raw = y_train
        self._dd: dict[str, torch.Tensor] = {}
        self._eig: dict[str, KernelEigh] = {}
        self._y: torch.Tensor | None = None

    def _train_kernel(self, g: str) -> torch.Tensor:
        if g not in self._dd:
            missing = tuple(h for h in _GETS if h not in self._dd)
            got = self._kernels(self._x, self._x, missing)
            for h, k in got.items():
                self._dd[h] = check_kernel(k, f"net.kernel(x_train, x_train).{h}", square=True)
                if self._dd[h].ndim != 2:
                    raise ValueError(
                        f"the {h} kernel must be [N, N] (shared across outputs), got "
                        f"{tuple(self._dd[h].shape)}."
                    )
            if self._y is None:
                y = check_targets(self._y_raw, self._x.shape[0], self._dd[g].dtype)
                self._y = y
        return self._dd[g]

    def _eigh(self, g: str) -> KernelEigh:
        if g not in self._eig:
            k = self._train_kernel(g)
            reg = self.diag_reg if self.absolute else self.diag_reg * float(k.diagonal().mean())
            self._eig[g] = KernelEigh.of(k, reg, f"the train-train {g} kernel")
        return self._eig[g]

    def __call__(self, t: Any = None, x_test: Any = None, get: Any = None, compute_cov=False):
        """Mean (and covariance) of the ensemble's outputs after training time ``t``.

        Args:
            t: None (infinity), a scalar or a tensor of times (leading output axes).
            x_test: test inputs ``[M, ...]``; None means the training inputs, unregularised
                (train outputs are then ``N(y, 0)`` at ``t = None``, as in neural-tangents).
            get: ``"nngp"``, ``"ntk"``, a tuple of them, or None for both.
            compute_cov: also return the covariance over initialisations.

        Returns:
            For one ``get`` name: the mean ``[*t, M, O]``, or :class:`Gaussian` with
            ``covariance [*t, M, M]`` when ``compute_cov``; for a tuple (or None) a namedtuple
            ``Gaussians(nngp=..., ntk=...)`` of those.
        """
        names, single = _canonical_get(get)
        for g in names:
            self._train_kernel(g)
        y = self._y
        vector = y.ndim == 1
        y2 = y[:, None] if vector else y
        dtype = y2.dtype
        td = tt = None
        if x_test is not None:
            xt = as_tensor(x_test, "x_test", dtype=None)
            need = ("nngp", "ntk") if compute_cov else names
            td = {
                h: check_kernel(k, f"net.kernel(x_test, x_train).{h}", square=False).to(dtype)
                for h, k in self._kernels(xt, self._x, need).items()
            }
            for h, k in td.items():
                if k.ndim != 2 or k.shape[1] != y2.shape[0]:
                    raise ValueError(
                        f"the test-train {h} kernel must be [M, {y2.shape[0]}], got "
                        f"{tuple(k.shape)}."
                    )
            if compute_cov:
                tt = self._kernels(xt, xt, ("nngp",))["nngp"].to(dtype)
        out = {}
        for g in names:
            if t is None:
                out[g] = self._infinite(g, y2, td, tt, compute_cov)
            else:
                out[g] = self._finite(g, t, y2, td, tt, compute_cov)
            if vector:
                m = out[g][0] if compute_cov else out[g]
                m = m[..., 0]
                out[g] = Gaussian(m, out[g][1]) if compute_cov else m
        if single:
            return out[names[0]]
        return Gaussians(**{g: out.get(g) for g in _GETS})

    def _infinite(self, g, y2, td, tt, compute_cov):
        if td is None:
            mean = y2.clone()
            return Gaussian(mean, torch.zeros_like(self._dd[g])) if compute_cov else mean
        eig = self._eigh(g)
        eig.check_invertible(f"the train-train {g} kernel")

        def solve(b):
            return eig.evecs @ ((eig.evecs.T @ b) / eig.evals[:, None])

        mean = td[g] @ solve(y2)
        if not compute_cov:
            return mean
        if g == "nngp":
            cov = tt - td["nngp"] @ solve(td["nngp"].T)
        else:
            t1 = solve(td["ntk"].T)  # [N, M]
            t2 = td["ntk"] @ solve(td["nngp"].T)
            cov = t1.T @ self._dd["nngp"] @ t1 - (t2 + t2.T) + tt
        return Gaussian(mean, cov)

    def _finite(self, g, t, y2, td, tt, compute_cov):
        t_shape = torch.as_tensor(t).shape
        times = check_times(t, y2.dtype, discrete=False).reshape(-1)
        eig = self._eigh(g)
        e, v = eig.evals, eig.evecs
        n = y2.numel()
        lr = self.learning_rate
        rm1, inv = flow_factors(e, times, lr, n)  # [T, P]
        vy = v.T @ y2  # [P, O]
        if td is None:
            mean = torch.einsum("jk,tk,ko->tjo", v, -rm1, vy)
        else:
            mean = torch.einsum("mj,jk,tk,ko->tmo", td[g], v, -inv, vy)
        mean = mean.reshape(*t_shape, *mean.shape[1:])
        if not compute_cov:
            return mean
        k_dd = self._dd["nngp"]
        if td is None:
            if g == "nngp":
                d = e[None, :] * torch.exp(-2 * e[None, :] * lr * times[:, None] / n)
                cov = torch.einsum("jk,tk,lk->tjl", v, d, v)
            else:
                ex = torch.einsum("jk,tk,lk->tjl", v, rm1 + 1, v)
                cov = ex @ k_dd @ ex
        else:
            if g == "nngp":
                _, inv2 = flow_factors(e, 2 * times, lr, n)
                kt = td["nngp"]
                cov = tt[None] + torch.einsum("mj,jk,tk,lk,nl->tmn", kt, v, inv2, v, kt)
            else:
                kt = td["ntk"]
                t1 = torch.einsum("jk,tk,lk,ml->tjm", v, -inv, v, kt)  # [T, N, M]
                t2 = torch.einsum("mj,jk,tk,lk,nl->tmn", kt, v, -inv, v, td["nngp"])
                t2 = t2 + t2.transpose(1, 2)
                cov = t1.transpose(1, 2) @ k_dd @ t1 - t2 + tt[None]
        cov = cov.reshape(*t_shape, *cov.shape[1:])
        return Gaussian(mean, cov)


def gradient_descent_mse_ensemble(
    net: Any,
    x_train: Any,
    y_train: Any,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
) -> EnsemblePredictor:
    """Predict the Gaussian distribution of an infinite ensemble of infinitely wide networks
    trained by gradient descent on ``0.5 ||f - y||^2 / y.size`` (neural-tangents 0.6.5
    ``predict.gradient_descent_mse_ensemble``, ``trace_axes=(-1,)``).

    Args:
        net: a :mod:`kernelens.infinite` network (its ``.kernel(x1, x2, get=("nngp", "ntk"))``
            returns ``[N1, N2]`` kernels), or any callable ``kernel_fn(x1, x2, get)`` returning
            an object with ``.nngp`` / ``.ntk``.
        x_train: training inputs ``[N, ...]``.
        y_train: targets ``[N, O]`` (or ``[N]``).
        learning_rate: step size; ``t`` is in units of it.
        diag_reg: ``r`` in ``K + r I`` (relative to the mean diagonal unless absolute).
        diag_reg_absolute_scale: read ``diag_reg`` in absolute units.

    Returns:
        :class:`EnsemblePredictor`, called as ``ens(t=None, x_test=None, get=None,
        compute_cov=False)``.
    """
    return EnsemblePredictor(
        net, x_train, y_train, learning_rate, diag_reg, diag_reg_absolute_scale
    )
