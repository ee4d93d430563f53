"""Classic kernels: Laplace, Gaussian, their Mahalanobis forms, product-Laplace, linear,
polynomial.

Conventions (bandwidth ``L > 0``):

========================  ===============================================
``LaplaceKernel``         ``exp(-||x - z||_2 / L)``  (the RFM literature's "Laplace")
``GaussianKernel``        ``exp(-||x - z||_2^2 / (2 L^2))``
``MahalanobisLaplace``    ``exp(-||x - z||_M / L)``, ``||u||_M = sqrt(u^T M u)``
``MahalanobisGaussian``   ``exp(-||x - z||_M^2 / (2 L^2))``
``ProductLaplaceKernel``  ``exp(-||x - z||_1 / L)`` = prod_j exp(-|x_j - z_j| / L)
``LinearKernel``          ``x . z``
``PolynomialKernel``      ``(gamma x . z + coef0)^degree``
========================  ===============================================

Note: scikit-learn's ``"laplacian"`` kernel is ``exp(-gamma ||x - z||_1)``, i.e. our
:class:`ProductLaplaceKernel` with ``L = 1 / gamma``, not the L2 Laplace kernel of the RFM
literature.

Bandwidths and ``M`` may be tensors with ``requires_grad=True``: gradients flow to them.
"""

from __future__ import annotations

from abc import abstractmethod

import torch

from .._validation import as_tensor, check_nonnegative, check_positive, check_positive_int
from .base import Kernel
from .distances import euclidean_distances, needs_autograd, squared_distances

__all__ = [
    "GaussianKernel",
    "LaplaceKernel",
    "LinearKernel",
    "MahalanobisGaussianKernel",
    "MahalanobisLaplaceKernel",
    "PolynomialKernel",
    "ProductLaplaceKernel",
]


def check_bandwidth(value: float | torch.Tensor) -> float | torch.Tensor:
    """``value`` if it is a positive bandwidth (a tensor keeps its autograd history)."""
    check_positive(value.detach() if isinstance(value, torch.Tensor) else value, "bandwidth")
    return value


def _exp_scaled(D: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """``exp(-D / scale)``, in place on ``D`` when autograd does not need it."""
    if needs_autograd(D, scale):
        return torch.exp(-D / scale)
    return D.mul_(-1.0 / scale).exp_()


class _StationaryKernel(Kernel):
    """Kernels ``k(x, z) = exp(-D(x, z) / scale)`` with ``k(x, x) = 1``.

    ``distances`` gives ``D`` (a norm or squared norm of ``x - z``) and ``from_distances`` the
    kernel from it, so callers that need ``D`` for something else (the RFM's AGOP weights)
    evaluate the kernel's own formula on their ``D`` instead of restating it.
    """

    has_bandwidth = True

    def __init__(self, bandwidth: float | torch.Tensor = 1.0) -> None:
        self.bandwidth = check_bandwidth(bandwidth)

    @abstractmethod
    def distances(self, X1: torch.Tensor, X2: torch.Tensor, *, same: bool = False) -> torch.Tensor:
        """``D(x, z)`` for all pairs ``[N1, N2]`` (``same``: X2 is X1, exact zero diagonal)."""

    @abstractmethod
    def scale(self) -> float | torch.Tensor:
        """The divisor of ``D`` in the exponent (``L`` or ``2 L^2``)."""

    def from_distances(self, D: torch.Tensor, *, in_place: bool = False) -> torch.Tensor:
        """``exp(-D / scale)`` from :meth:`distances` (a new tensor unless ``in_place``)."""
        return _exp_scaled(D if in_place else D.clone(), self.scale())

    def _gram(self, X1: torch.Tensor, X2: torch.Tensor, *, same: bool) -> torch.Tensor:
        return self.from_distances(self.distances(X1, X2, same=same), in_place=True)

    def diag(self, X: torch.Tensor) -> torch.Tensor:
        X = as_tensor(X, "X", ndim=2)
        return torch.ones(X.shape[0], dtype=X.dtype, device=X.device)

    def _repr_params(self) -> dict[str, object]:
        bw = self.bandwidth
        return {"bandwidth": float(bw.detach()) if isinstance(bw, torch.Tensor) else bw}


class LaplaceKernel(_StationaryKernel):
    """``exp(-||x - z||_2 / L)``."""

    name = "laplace"

    def distances(self, X1: torch.Tensor, X2: torch.Tensor, *, same: bool = False) -> torch.Tensor:
        return euclidean_distances(X1, X2, same=same)

    def scale(self) -> float | torch.Tensor:
        return self.bandwidth


class GaussianKernel(_StationaryKernel):
    """``exp(-||x - z||_2^2 / (2 L^2))``."""

    name = "gaussian"

    def distances(self, X1: torch.Tensor, X2: torch.Tensor, *, same: bool = False) -> torch.Tensor:
        return squared_distances(X1, X2, same=same)

    def scale(self) -> float | torch.Tensor:
        return 2.0 * self.bandwidth**2


class ProductLaplaceKernel(_StationaryKernel):
    """``exp(-||x - z||_1 / L)`` (scikit-learn's "laplacian" with ``gamma = 1 / L``)."""

    name = "product_laplace"

    def distances(self, X1: torch.Tensor, X2: torch.Tensor, *, same: bool = False) -> torch.Tensor:
        return torch.cdist(X1, X2, p=1.0)

    def scale(self) -> float | torch.Tensor:
        return self.bandwidth


class _MahalanobisKernel(_StationaryKernel):
    def __init__(self, M: torch.Tensor, bandwidth: float | torch.Tensor = 1.0) -> None:
        super().__init__(bandwidth)
        M = as_tensor(M, "M", ndim=2)
        if M.shape[0] != M.shape[1]:
            raise ValueError(f"M must be square [d, d], got shape {tuple(M.shape)}.")
        Md = M.detach()
        scale = float(Md.abs().max()) if Md.numel() else 0.0
        tol = 1e-6 * max(scale, 1e-300)
        if float((Md - Md.T).abs().max()) > tol:
            raise ValueError("M must be symmetric; pass (M + M.T) / 2.")
        min_eig = float(torch.linalg.eigvalsh(Md.double()).min())
        if min_eig < -1e-6 * max(scale, 1e-300) * M.shape[0]:
            raise ValueError(
                f"M must be positive semi-definite; its smallest eigenvalue is {min_eig:.3g}. "
                "Project it, e.g. V @ diag(clamp(w, min=0)) @ V.T from torch.linalg.eigh."
            )
        self.M = M

    def _check_pair(self, X1, X2):  # type: ignore[override]
        X1, X2 = super()._check_pair(X1, X2)
        if X1.shape[1] != self.M.shape[0]:
            raise ValueError(
                f"X1 has {X1.shape[1]} features but M is {tuple(self.M.shape)}; they must agree."
            )
        return X1, X2

    def _M(self, like: torch.Tensor) -> torch.Tensor:
        return self.M.to(dtype=like.dtype, device=like.device)


class MahalanobisLaplaceKernel(_MahalanobisKernel):
    """``exp(-||x - z||_M / L)`` with a PSD matrix ``M [d, d]`` (the RFM kernel)."""

    name = "mahalanobis_laplace"

    def distances(self, X1: torch.Tensor, X2: torch.Tensor, *, same: bool = False) -> torch.Tensor:
        return euclidean_distances(X1, X2, M=self._M(X1), same=same)

    def scale(self) -> float | torch.Tensor:
        return self.bandwidth


class MahalanobisGaussianKernel(_MahalanobisKernel):
    """``exp(-||x - z||_M^2 / (2 L^2))`` with a PSD matrix ``M [d, d]``."""

    name = "mahalanobis_gaussian"

    def distances(self, X1: torch.Tensor, X2: torch.Tensor, *, same: bool = False) -> torch.Tensor:
        return squared_distances(X1, X2, M=self._M(X1), same=same)

    def scale(self) -> float | torch.Tensor:
        return 2.0 * self.bandwidth**2


class LinearKernel(Kernel):
    """``x . z``."""

    name = "linear"

    def from_inner_products(self, G: torch.Tensor, d: int) -> torch.Tensor:
        """Kernel values from inner products ``G = x . z`` of ``d``-dimensional points."""
        return G

    def _gram(self, X1: torch.Tensor, X2: torch.Tensor, *, same: bool) -> torch.Tensor:
        return self.from_inner_products(X1 @ X2.T, X1.shape[1])

    def diag(self, X: torch.Tensor) -> torch.Tensor:
        X = as_tensor(X, "X", ndim=2)
        return (X * X).sum(dim=1)


class PolynomialKernel(Kernel):
    """``(gamma x . z + coef0)^degree``; ``gamma=None`` means ``1 / d`` (scikit-learn's)."""

    name = "polynomial"

    def __init__(self, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> None:
        self.degree = check_positive_int(degree, "degree")
        self.gamma = None if gamma is None else check_positive(gamma, "gamma")
        self.coef0 = check_nonnegative(coef0, "coef0")

    def from_inner_products(self, G: torch.Tensor, d: int) -> torch.Tensor:
        """Kernel values from inner products ``G = x . z`` of ``d``-dimensional points."""
        gamma = self.gamma if self.gamma is not None else 1.0 / d
        return (gamma * G + self.coef0) ** self.degree

    def _gram(self, X1: torch.Tensor, X2: torch.Tensor, *, same: bool) -> torch.Tensor:
        return self.from_inner_products(X1 @ X2.T, X1.shape[1])

    def diag(self, X: torch.Tensor) -> torch.Tensor:
        X = as_tensor(X, "X", ndim=2)
        return self.from_inner_products((X * X).sum(dim=1), X.shape[1])

    def _repr_params(self) -> dict[str, object]:
        return {"degree": self.degree, "gamma": self.gamma, "coef0": self.coef0}
