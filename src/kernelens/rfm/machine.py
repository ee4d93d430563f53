"""A fitted kernel machine with a learned metric: ``f(x) = k_M(x, X) @ coef + intercept``."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .._memory import element_size, tile_size
from .._validation import as_tensor
from ..kernels import (
    GaussianKernel,
    LaplaceKernel,
    MahalanobisGaussianKernel,
    MahalanobisLaplaceKernel,
    ProductLaplaceKernel,
)
from ._gradients import base_kernel, machine_gradients
from ._metric import MetricFactor

__all__ = ["KernelMachine", "base_kernel"]


@dataclass(frozen=True)
class KernelMachine:
    """``f(x) = k(x S, X S) @ coef + intercept`` with ``M = S S^T``.

    ``k`` is the Laplace (``exp(-||x - z||_M / L)``), Gaussian
    (``exp(-||x - z||_M^2 / (2 L^2))``) or product-Laplace (``exp(-||S^T (x - z)||_1 / L)``)
    kernel. Fitted RFM estimators expose theirs as ``machine_``.

    Attributes:
        kernel: ``"laplace"``, ``"gaussian"`` or ``"product_laplace"``.
        bandwidth: ``L``.
        M: the metric ``[d, d]``.
        factor: its factor ``S`` (:class:`~kernelens.rfm._metric.MetricFactor`).
        centres: the mapped training inputs ``X S`` ``[n, r]``.
        coef: ``[n, c]`` coefficients.
        intercept: ``[c]`` added to every prediction.
    """

    kernel: str
    bandwidth: float
    M: torch.Tensor
    factor: MetricFactor
    centres: torch.Tensor
    coef: torch.Tensor
    intercept: torch.Tensor

    @classmethod
    def build(
        cls,
        kernel: str,
        bandwidth: float,
        M: torch.Tensor,
        X: torch.Tensor,
        coef: torch.Tensor,
        intercept: torch.Tensor,
        *,
        diagonal: bool = False,
    ) -> KernelMachine:
        """The machine with metric ``M [d, d]``, training inputs ``X [n, d]`` and ``coef``."""
        factor = MetricFactor.from_matrix(
            M, diagonal=diagonal, symmetric_root=kernel == "product_laplace"
        )
        return cls(kernel, bandwidth, M, factor, factor.apply(X), coef, intercept)

    def rescaled(self, scale: torch.Tensor) -> KernelMachine:
        """For a machine fitted on ``X / scale`` (``scale [d] > 0``), the same predictor on
        ``X``: ``M -> diag(1/scale) M diag(1/scale)``, ``S -> diag(1/scale) S``; centres,
        coefficients and every prediction are unchanged."""
        if bool((scale == 1).all()):
            return self
        s = scale.to(self.M.dtype)
        M = self.M / (s[:, None] * s[None, :])
        return replace(self, M=M, factor=self.factor.divide_rows(s))

    def _inputs(self, X: torch.Tensor) -> torch.Tensor:
        X = as_tensor(X, "X", ndim=2, dtype=self.coef.dtype, device=self.coef.device)
        if X.shape[1] != self.factor.d:
            raise ValueError(
                f"X has {X.shape[1]} features but the machine was fitted on {self.factor.d}."
            )
        return X

    def predict(
        self,
        X: torch.Tensor,
        *,
        memory_budget: int | None = None,
        show_progress: bool | None = None,
    ) -> torch.Tensor:
        """``f(X)``: ``X [m, d]`` -> ``[m, c]``, in tiles."""
        U = self.factor.apply(self._inputs(X))
        k = base_kernel(self.kernel, self.bandwidth)
        out = k.matvec(
            U, self.centres, self.coef, memory_budget=memory_budget, show_progress=show_progress
        )
        return out + self.intercept

    def gradients(self, X: torch.Tensor, *, memory_budget: int | None = None) -> torch.Tensor:
        """``grad_x f_j(x)`` for every row: ``X [m, d]`` -> ``[m, c, d]`` (see
        :mod:`kernelens.rfm._gradients` for the convention at ``x = x_i``)."""
        X = self._inputs(X)
        G = self.u_gradients(self.factor.apply(X), memory_budget=memory_budget)
        if self.factor.index is not None:
            out = X.new_zeros(X.shape[0], G.shape[1], self.factor.d)
            out[:, :, self.factor.index] = G * self.factor.scale.to(G.dtype)
            return out
        return G @ self.factor.scale.to(G.dtype).T

    def u_gradients(
        self,
        U: torch.Tensor,
        *,
        weights: torch.Tensor | None = None,
        memory_budget: int | None = None,
    ) -> torch.Tensor:
        """Gradients in the mapped coordinates: ``U [m, r]`` -> ``[m, c, r]`` (``weights``:
        ``w(U, centres) [m, n]`` when already known, see :mod:`kernelens.rfm._gradients`)."""
        return machine_gradients(
            self.kernel,
            self.bandwidth,
            U,
            self.centres,
            self.coef,
            weights=weights,
            memory_budget=memory_budget,
        )

    def gradient_tile_rows(self, m: int, memory_budget: int | None) -> int:
        """Query rows (of ``m``) per gradient tile: the ``[rows, c, r]`` gradient block and its
        products use at most half the budget."""
        c, r = self.coef.shape[1], max(1, self.factor.rank)
        per_row = 3 * c * r * element_size(self.coef.dtype)
        return tile_size(m, 2 * per_row, memory_budget)

    @classmethod
    def from_kernel_ridge(cls, estimator: object) -> KernelMachine:
        """The machine of a fitted :class:`kernelens.kernels.KernelRidge` (or
        ``KernelClassifier``) with a Laplace, Gaussian, product-Laplace or Mahalanobis
        Laplace/Gaussian kernel."""
        kern = estimator.kernel_  # type: ignore[attr-defined]
        X = estimator.X_fit_  # type: ignore[attr-defined]
        coef = estimator._coef2d  # type: ignore[attr-defined]
        kinds = {
            LaplaceKernel: ("laplace", False),
            GaussianKernel: ("gaussian", False),
            ProductLaplaceKernel: ("product_laplace", False),
            MahalanobisLaplaceKernel: ("laplace", True),
            MahalanobisGaussianKernel: ("gaussian", True),
        }
        if type(kern) not in kinds:
            raise TypeError(
                f"agop needs a Laplace, Gaussian or product-Laplace kernel (optionally "
                f"Mahalanobis), got {type(kern).__name__}; pass a callable predictor instead "
                "to use autograd."
            )
        kind, mahalanobis = kinds[type(kern)]
        bw = kern.bandwidth
        bandwidth = float(bw.detach()) if isinstance(bw, torch.Tensor) else float(bw)
        d = X.shape[1]
        M = kern.M.detach().to(X.dtype) if mahalanobis else torch.eye(d, dtype=X.dtype)
        zero = torch.zeros(coef.shape[1], dtype=coef.dtype, device=coef.device)
        return cls.build(kind, bandwidth, M, X, coef, zero)
