"""Gaussian process regression on any kernelens kernel, with a scikit-learn API."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import RegressorMixin
from sklearn.utils.validation import check_is_fitted

from .._persist import PersistMixin
from .._sklearn import (
    DTYPES,
    Constraint,
    boolean,
    choice,
    memory_budget,
    nonnegative,
    optional,
    positive,
    wrap_like,
)
from ..linalg import jittered_cholesky
from .base import Kernel
from .registry import resolve_kernel
from .sklearn_base import KERNEL_CONSTRAINTS, KernelEstimatorMixin

__all__ = ["GaussianProcessRegressor"]


class GaussianProcessRegressor(PersistMixin, RegressorMixin, KernelEstimatorMixin):
    """GP regression with covariance ``amplitude * k(x, z)`` and noise variance ``alpha``.

    Args:
        kernel: a kernel name, a :class:`~kernelens.kernels.Kernel`, or ``"precomputed"``.
        bandwidth: kernel bandwidth (None: 1.0 for named kernels with one, an instance's own;
            see :func:`~kernelens.kernels.resolve_kernel`); the start of the search with
            ``optimize``.
        amplitude: signal variance multiplying the kernel (> 0).
        alpha: noise variance added to the training Gram's diagonal (>= 0), as scikit-learn's.
        normalize_y: standardise targets (mean 0, variance 1) before fitting, as scikit-learn.
        optimize: maximise the log marginal likelihood over ``log bandwidth``, ``log
            amplitude`` and ``log alpha`` (L-BFGS, gradients by autograd through the kernel)
            before the final fit. Fitted values are in ``bandwidth_``, ``amplitude_``,
            ``alpha_``.
        kernel_params, dtype, memory_budget: as in :class:`~kernelens.kernels.KernelRidge`.

    Attributes:
        log_marginal_likelihood_value_: the log marginal likelihood of the training targets
            (summed over target columns, scikit-learn's convention).
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        **KERNEL_CONSTRAINTS,
        "bandwidth": optional(positive),
        "amplitude": positive,
        "alpha": nonnegative,
        "normalize_y": boolean,
        "optimize": boolean,
        "dtype": choice(DTYPES),
        "memory_budget": memory_budget,
    }

    def __init__(
        self,
        kernel: str | Kernel = "gaussian",
        *,
        bandwidth: float | None = None,
        amplitude: float = 1.0,
        alpha: float = 1e-10,
        normalize_y: bool = False,
        optimize: bool = False,
        kernel_params: dict[str, Any] | None = None,
        dtype: str = "float64",
        memory_budget: int | None = None,
    ) -> None:
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.amplitude = amplitude
        self.alpha = alpha
        self.normalize_y = normalize_y
        self.optimize = optimize
        self.kernel_params = kernel_params
        self.dtype = dtype
        self.memory_budget = memory_budget

    # -- core --------------------------------------------------------------------------------
    def _kernel_at(self, bandwidth: float | torch.Tensor) -> Kernel | None:
        if not self._has_bandwidth():
            return self._make_kernel()
        return resolve_kernel(self.kernel, bandwidth, self.kernel_params)

    def _initial_bandwidth(self) -> float | None:
        """The bandwidth before any optimisation (None for kernels without one)."""
        k = self._make_kernel()
        if k is None or not k.has_bandwidth:
            return None
        return k.bandwidth  # type: ignore[attr-defined]

    def _has_bandwidth(self) -> bool:
        k = self._make_kernel()
        return k is not None and k.has_bandwidth and not isinstance(self.kernel, Kernel)

    def _lml(
        self, X: torch.Tensor, Y: torch.Tensor, bandwidth: Any, amplitude: Any, alpha: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log marginal likelihood, Cholesky factor, coef)`` of ``Y [n, k]``."""
        kernel = self._kernel_at(bandwidth)
        K = X if kernel is None else kernel(X)
        n = K.shape[0]
        A = amplitude * K + alpha * torch.eye(n, dtype=K.dtype, device=K.device)
        L, _ = jittered_cholesky(A, warn=False)
        coef = torch.cholesky_solve(Y, L)
        lml = (
            -0.5 * (Y * coef).sum()
            - Y.shape[1] * torch.log(torch.diagonal(L)).sum()
            - 0.5 * n * Y.shape[1] * math.log(2 * math.pi)
        )
        return lml, L, coef

    def _optimise(self, X: torch.Tensor, Y: torch.Tensor) -> tuple[float, float, float]:
        """Maximise the LML over log-parameters with L-BFGS; returns the optimum."""
        names = ["amplitude", "alpha"] + (["bandwidth"] if self._has_bandwidth() else [])
        start = {
            "amplitude": self.amplitude,
            "alpha": max(self.alpha, 1e-8),
            "bandwidth": self._initial_bandwidth(),
        }
        logs = {
            k: torch.tensor(math.log(start[k]), dtype=X.dtype, requires_grad=True) for k in names
        }
        opt = torch.optim.LBFGS(list(logs.values()), max_iter=100, line_search_fn="strong_wolfe")

        def values() -> dict[str, Any]:
            v = {k: torch.exp(t) for k, t in logs.items()}
            v.setdefault("bandwidth", self._initial_bandwidth())
            return v

        def closure() -> torch.Tensor:
            opt.zero_grad()
            v = values()
            loss = -self._lml(X, Y, v["bandwidth"], v["amplitude"], v["alpha"])[0]
            loss.backward()
            return loss

        opt.step(closure)
        v = {
            k: float(t.detach()) if isinstance(t, torch.Tensor) else t for k, t in values().items()
        }
        return v["bandwidth"], v["amplitude"], v["alpha"]

    def fit(self, X: Any, y: Any) -> GaussianProcessRegressor:
        """Fit on ``X [n, d]`` and ``y [n]`` or ``[n, k]``."""
        self._validate_params()
        X, y = self._validate_X(X, reset=True, y=y, y_numeric=True, multi_output=True)
        Y = y[:, None] if y.ndim == 1 else y
        if self.normalize_y:
            self._y_mean = Y.mean(axis=0)
            std = Y.std(axis=0)
            self._y_std = np.where(std > 0, std, 1.0)
        else:
            self._y_mean = np.zeros(Y.shape[1])
            self._y_std = np.ones(Y.shape[1])
        Yt = self._tensor((Y - self._y_mean) / self._y_std)
        Xt = self._tensor(X)
        if self.optimize:
            self.bandwidth_, self.amplitude_, self.alpha_ = self._optimise(Xt, Yt)
        else:
            self.bandwidth_, self.amplitude_, self.alpha_ = (
                self._initial_bandwidth(),
                self.amplitude,
                self.alpha,
            )
        with torch.no_grad():
            lml, L, coef = self._lml(Xt, Yt, self.bandwidth_, self.amplitude_, self.alpha_)
        self.kernel_ = self._kernel_at(self.bandwidth_)
        self.X_fit_ = Xt
        self._L, self._coef2d, self._Y_fit, self._single = L, coef, Yt, y.ndim == 1
        self.log_marginal_likelihood_value_ = float(lml)
        return self

    def log_marginal_likelihood(
        self,
        *,
        bandwidth: float | None = None,
        amplitude: float | None = None,
        alpha: float | None = None,
    ) -> float:
        """LML of the training data at other hyper-parameters (defaults: the fitted ones)."""
        check_is_fitted(self, "X_fit_")
        with torch.no_grad():
            lml, _, _ = self._lml(
                self.X_fit_,
                self._Y_fit,
                self.bandwidth_ if bandwidth is None else bandwidth,
                self.amplitude_ if amplitude is None else amplitude,
                self.alpha_ if alpha is None else alpha,
            )
        return float(lml)

    def predict(self, X: Any, return_std: bool = False, return_cov: bool = False) -> Any:
        """Posterior mean ``[m]`` (or ``[m, k]``), optionally with std ``[m]`` or cov ``[m, m]``.

        The predictive variance is that of the latent function (no ``alpha`` added), as in
        scikit-learn. For ``precomputed`` kernels ``X`` is the ``[m, n]`` test-train Gram; the
        variance needs ``k(x, x)`` and is then not available.
        """
        check_is_fitted(self, "X_fit_")
        if return_std and return_cov:
            raise ValueError("return_std and return_cov cannot both be True; pick one.")
        if (return_std or return_cov) and self.kernel_ is None:
            raise ValueError(
                "return_std/return_cov need k(x, x), which kernel='precomputed' does not give; "
                "pass a kernel name or a Kernel object instead."
            )
        Xv = self._tensor(self._validate_X(X, reset=False))
        Ks = self.amplitude_ * (Xv if self.kernel_ is None else self.kernel_(Xv, self.X_fit_))
        y_std = torch.as_tensor(self._y_std, dtype=Ks.dtype)
        mean = (Ks @ self._coef2d) * y_std + torch.as_tensor(self._y_mean, dtype=Ks.dtype)
        mean_out = wrap_like(mean[:, 0] if self._single else mean, X)
        if not (return_std or return_cov):
            return mean_out
        V = torch.linalg.solve_triangular(self._L, Ks.T, upper=False)
        if return_cov:
            cov = self.amplitude_ * self.kernel_(Xv) - V.T @ V
            cov = cov[..., None] * y_std**2 if not self._single else cov * y_std[0] ** 2
            return mean_out, wrap_like(cov, X)
        var = (self.amplitude_ * self.kernel_.diag(Xv) - (V * V).sum(dim=0)).clamp_min(0.0)
        std = var.sqrt()[:, None] * y_std
        return mean_out, wrap_like(std[:, 0] if self._single else std, X)
