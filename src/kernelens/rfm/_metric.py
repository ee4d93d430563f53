"""The learned metric ``M`` as a feature map: ``||x - z||_M = ||S^T (x - z)||_2`` with ``M = S S^T``.

RFM kernels depend on the inputs only through ``u = S^T x`` (a row ``x [d]`` maps to
``u = x S [r]``), so every Gram, matvec and gradient is computed on ``U = X S [n, r]`` with the
plain kernel. ``S`` drops the directions ``M`` does not use: for a diagonal ``M`` the zero
coordinates, for a full ``M`` the eigenvectors whose eigenvalue is round-off (at most
``d * eps * max eigenvalue``), so a low-rank ``M`` makes every kernel evaluation cheaper and
changes nothing else. Gradients in ``u`` map back by the chain rule, ``grad_x = S grad_u``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["MetricFactor", "metric_update"]


def _support(M: torch.Tensor) -> torch.Tensor:
    """Coordinates with ``M_jj > 0``: a PSD matrix is zero on the rows and columns of the
    others, so they are left out exactly (unused features stay exactly unused)."""
    return torch.nonzero(M.diagonal() > 0).flatten()


@dataclass(frozen=True)
class MetricFactor:
    """A factor ``S [d, r]`` of ``M = S S^T``, stored compactly when ``M`` is diagonal.

    Attributes:
        d: input dimension.
        scale: diagonal case: ``sqrt(M_jj)`` of the kept coordinates ``[r]``; full case:
            the dense factor ``S [d, r]``.
        index: diagonal case: the kept coordinates ``[r]`` (int64); None for a dense factor.
    """

    d: int
    scale: torch.Tensor
    index: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        """``r``, the number of coordinates the kernel sees."""
        return int(self.scale.shape[-1])

    @classmethod
    def identity(cls, d: int, *, dtype: torch.dtype) -> MetricFactor:
        """``M = I`` (the plain kernel)."""
        return cls(d, torch.ones(d, dtype=dtype), torch.arange(d))

    @classmethod
    def from_diagonal(cls, m: torch.Tensor) -> MetricFactor:
        """``M = diag(m)`` for ``m [d] >= 0``: keeps the coordinates with ``m_j`` above
        round-off (``d * eps * max m``)."""
        m = m.clamp_min(0.0)
        top = float(m.max()) if m.numel() else 0.0
        keep = m > len(m) * torch.finfo(m.dtype).eps * top if top > 0 else m > 0
        index = torch.nonzero(keep).flatten()
        return cls(len(m), m[index].sqrt(), index)

    @classmethod
    def from_eigh(
        cls,
        d: int,
        support: torch.Tensor,
        w: torch.Tensor,
        V: torch.Tensor,
        *,
        symmetric_root: bool,
    ) -> MetricFactor:
        """The factor of ``M`` given the eigenpairs ``(w, V)`` of ``M`` restricted to the
        coordinates ``support`` (zero elsewhere)."""
        top = float(w.max()) if w.numel() else 0.0
        if symmetric_root:
            root = torch.zeros(d, d, dtype=V.dtype, device=V.device)
            root[support[:, None], support[None, :]] = (V * w.clamp_min(0.0).sqrt()) @ V.T
            return cls(d, root if top > 0 else root[:, :0])
        keep = w > d * torch.finfo(w.dtype).eps * max(top, 0.0)
        S = torch.zeros(d, int(keep.sum()), dtype=V.dtype, device=V.device)
        S[support] = V[:, keep] * w[keep].sqrt()
        return cls(d, S)

    @classmethod
    def from_matrix(cls, M: torch.Tensor, *, diagonal: bool, symmetric_root: bool) -> MetricFactor:
        """Factor a symmetric PSD ``M [d, d]``.

        Args:
            M: the metric.
            diagonal: use only ``diag(M)`` (exact when ``M`` is diagonal).
            symmetric_root: return the symmetric square root ``M^(1/2) [d, d]`` instead of
                the thin eigen-factor ``V_r diag(sqrt(w_r)) [d, r]``. Kernels that are not
                rotation invariant (product-Laplace, an L1 norm of ``u``) need it, since for
                them ``S`` and ``S Q`` (``Q`` orthogonal) give different kernels.
        """
        if diagonal:
            return cls.from_diagonal(M.diagonal())
        support = _support(M)
        Ms = M[support][:, support]
        w, V = torch.linalg.eigh((Ms + Ms.T) / 2)
        return cls.from_eigh(M.shape[0], support, w, V, symmetric_root=symmetric_root)

    def divide_rows(self, s: torch.Tensor) -> MetricFactor:
        """The factor ``diag(1/s) S`` of ``diag(1/s) M diag(1/s)``: for inputs ``x``, the
        factor that ``self`` is for ``x / s`` (``s [d] > 0``)."""
        s = s.to(self.scale.dtype)
        if self.index is not None:
            return MetricFactor(self.d, self.scale / s[self.index], self.index)
        return MetricFactor(self.d, self.scale / s[:, None])

    def apply(self, X: torch.Tensor) -> torch.Tensor:
        """``U = X S``: ``X [n, d]`` -> ``[n, r]``."""
        if self.index is not None:
            return X[:, self.index] * self.scale.to(X.dtype)
        return X @ self.scale.to(X.dtype)

    def pull_back(self, G: torch.Tensor) -> torch.Tensor:
        """``S G S^T``: a matrix ``G [r, r]`` in ``u`` coordinates -> ``[d, d]`` in ``x``."""
        if self.index is not None:
            out = torch.zeros(self.d, self.d, dtype=G.dtype, device=G.device)
            s = self.scale.to(G.dtype)
            out[self.index[:, None], self.index[None, :]] = G * s[:, None] * s[None, :]
            return out
        S = self.scale.to(G.dtype)
        return S @ G @ S.T

    def pull_back_diagonal(self, g: torch.Tensor) -> torch.Tensor:
        """``diag(S G S^T)`` from ``G``'s diagonal alone, valid for a diagonal factor:
        ``g [r]`` -> ``[d]``."""
        if self.index is None:
            raise ValueError("pull_back_diagonal needs a diagonal factor.")
        out = torch.zeros(self.d, dtype=g.dtype, device=g.device)
        out[self.index] = g * self.scale.to(g.dtype) ** 2
        return out

    def matrix(self) -> torch.Tensor:
        """``M = S S^T [d, d]``."""
        r = self.rank
        eye = torch.eye(r, dtype=self.scale.dtype, device=self.scale.device)
        return self.pull_back(eye)


def metric_update(
    G: torch.Tensor, *, power: float = 1.0, symmetric_root: bool = False
) -> tuple[torch.Tensor, MetricFactor] | None:
    """The next RFM metric from an AGOP, and its factor, from one eigendecomposition.

    ``M = G^power / lambda_max(G^power)``: the matrix power (negative round-off eigenvalues
    clipped to 0) scaled so that its largest eigenvalue is 1. The scaling keeps the kernel at
    its bandwidth's scale along the most important direction, and unlike the largest
    diagonal entry (xRFM's choice, equal to it when ``M`` is diagonal) it does not depend on
    the coordinate system, so full-metric RFM is exactly rotation-equivariant.

    Args:
        G: the AGOP ``[d, d]``, or its diagonal ``[d]`` (then ``M`` is diagonal).
        power: exponent (``1``: Radhakrishnan et al.; ``1/2``: the square root used in later
            AGOP work).
        symmetric_root: see :meth:`MetricFactor.from_matrix`.

    Returns:
        ``(M [d, d], factor)``, or None when ``G`` is zero (a constant predictor).
    """
    if G.ndim == 1:
        g = G.clamp_min(0.0) ** power
        top = float(g.max())
        if not top > 0:
            return None
        return torch.diag(g / top), MetricFactor.from_diagonal(g / top)
    d = G.shape[0]
    support = _support(G)
    Gs = G[support][:, support]
    w, V = torch.linalg.eigh((Gs + Gs.T) / 2)
    w = w.clamp_min(0.0) ** power
    top = float(w.max()) if w.numel() else 0.0
    if not top > 0:
        return None
    w = w / top
    if power == 1.0:
        M = (G + G.T) / (2 * top)
    else:
        M = torch.zeros_like(G)
        M[support[:, None], support[None, :]] = (V * w) @ V.T
    return M, MetricFactor.from_eigh(d, support, w, V, symmetric_root=symmetric_root)
