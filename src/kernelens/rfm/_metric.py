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


def metric_update(G: torch.Tensor, *, power: float = 1.0) -> torch.Tensor | None:
    """The next RFM metric from an AGOP: ``G^power`` scaled to a largest diagonal entry of 1.

    Args:
        G: the AGOP ``[d, d]``, or its diagonal ``[d]`` (then the metric is ``diag(G^power)``).
        power: exponent (``1`` is the RFM of Radhakrishnan et al.; ``1/2`` the square root
            used in later AGOP work); a matrix power through the eigendecomposition, with
            round-off negative eigenvalues clipped to 0.

    Returns:
        ``[d, d]``, or None when ``G`` is zero (a constant predictor has no features).
    """
    if G.ndim == 1:
        g = G.clamp_min(0.0) ** power
        top = float(g.max())
        return torch.diag(g / top) if top > 0 else None
    if power != 1.0:
        w, V = torch.linalg.eigh((G + G.T) / 2)
        G = (V * w.clamp_min(0.0) ** power) @ V.T
    top = float(G.diagonal().max())
    return G / top if top > 0 else None


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
        d = M.shape[0]
        eps = torch.finfo(M.dtype).eps
        if diagonal:
            m = M.diagonal().clamp_min(0.0)
            keep = m > d * eps * float(m.max()) if bool((m > 0).any()) else m > 0
            index = torch.nonzero(keep).flatten()
            return cls(d, m[index].sqrt(), index)
        # a PSD matrix with M_jj = 0 has row and column j zero: factor the support only, so
        # unused coordinates stay exactly unused
        support = torch.nonzero(M.diagonal() > 0).flatten()
        Ms = M[support][:, support]
        w, V = torch.linalg.eigh((Ms + Ms.T) / 2)
        top = float(w.max()) if w.numel() else 0.0
        keep = w > d * eps * max(top, 0.0)
        if symmetric_root:
            root = torch.zeros(d, d, dtype=M.dtype, device=M.device)
            root[support[:, None], support[None, :]] = (V * w.clamp_min(0.0).sqrt()) @ V.T
            return cls(d, root if top > 0 else root[:, :0])
        S = torch.zeros(d, int(keep.sum()), dtype=M.dtype, device=M.device)
        S[support] = V[:, keep] * w[keep].sqrt()
        return cls(d, S)

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
