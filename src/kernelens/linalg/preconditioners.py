"""Low-rank spectral preconditioners for ``(A + shift I) x = b`` with PSD ``A``.

Both preconditioners here approximate the top eigenpairs ``(U, Lambda)`` of ``A`` and
flatten them to the level of the smallest one kept (Frangella, Tropp & Udell 2023, eq. 5.3):

    P^{-1} = (lambda_l + shift) U (Lambda + shift I)^{-1} U^T + (I - U U^T).

With exact eigenpairs the preconditioned matrix has eigenvalues ``lambda_l + shift`` (the
damped top ones) and ``lambda_j + shift, j > l`` (the rest), so CG needs about
``sqrt((lambda_l + shift) / (lambda_min + shift))`` iterations instead of
``sqrt((lambda_1 + shift) / (lambda_min + shift))``. This is also EigenPro's idea (Ma &
Belkin 2017): damping the top ``q`` eigendirections lets gradient steps grow from
``1 / lambda_1`` to ``1 / lambda_{q+1}``. The two classes differ in how they find ``U``:

- :class:`NystromPreconditioner`: a randomized Nystrom sketch of the whole operator
  (``rank`` products with ``A``); works for any PSD operator.
- :class:`EigenProPreconditioner`: the Nystrom extension of the top eigenvectors of the
  Gram of a random subsample of the data; needs the kernel and the points, costs only
  ``n x subsample_size`` kernel evaluations.
"""

from __future__ import annotations

import numpy as np
import torch

from .._memory import resolve_memory_budget
from .._validation import as_tensor, check_nonnegative, check_positive_int
from ._common import Seed, as_square_operator, make_generator, random_block
from ._kernel_tiles import KernelFn, kernel_matmul
from .cholesky import jittered_cholesky
from .operator import LinearOperator

__all__ = ["EigenProPreconditioner", "LowRankPreconditioner", "NystromPreconditioner"]


class LowRankPreconditioner:
    """``P^{-1} = (lambda_l + shift) U (Lambda + shift I)^{-1} U^T + (I - U U^T)``.

    Args:
        eigenvectors: orthonormal ``U [n, l]``.
        eigenvalues: ``Lambda [l]`` (non-negative, descending), approximations of the top
            eigenvalues of the PSD ``A``.
        shift: the ``shift`` of the system ``(A + shift I)``.

    Attributes:
        eigenvalues, eigenvectors, shift: as given; ``A ~ U diag(Lambda) U^T`` is a low-rank
            approximation of ``A`` in its own right.
        floor: ``lambda_l + shift``, the level the top eigenvalues are flattened to.
    """

    def __init__(self, eigenvectors: torch.Tensor, eigenvalues: torch.Tensor, shift: float) -> None:
        if eigenvectors.ndim != 2 or eigenvalues.ndim != 1:
            raise ValueError("eigenvectors must be [n, l] and eigenvalues [l].")
        if eigenvectors.shape[1] != eigenvalues.shape[0]:
            raise ValueError(
                f"eigenvectors has {eigenvectors.shape[1]} columns but eigenvalues has "
                f"{eigenvalues.shape[0]} entries."
            )
        shift = check_nonnegative(shift, "shift")
        floor = float(eigenvalues.min()) + shift
        if not floor > 0:
            raise ValueError(
                "the smallest kept eigenvalue plus shift is not positive (the operator looks "
                "rank-deficient at this rank); use shift > 0 or a smaller rank."
            )
        self.eigenvectors = eigenvectors
        self.eigenvalues = eigenvalues
        self.shift = shift
        self.floor = floor
        # scale on span(U): floor / (lambda_i + shift), in [floor / (lambda_1 + shift), 1]
        self._scale = (floor / (eigenvalues + shift)).to(eigenvectors.dtype)

    @property
    def shape(self) -> tuple[int, int]:
        n = self.eigenvectors.shape[0]
        return (n, n)

    def apply(self, R: torch.Tensor) -> torch.Tensor:
        """``P^{-1} R`` for ``R [n]`` or ``[n, k]``."""
        vec = R.ndim == 1
        Rm = R[:, None] if vec else R
        U = self.eigenvectors
        C = U.T @ Rm
        out = Rm + U @ ((self._scale - 1)[:, None] * C)
        return out[:, 0] if vec else out

    def as_operator(self) -> LinearOperator:
        """``P^{-1}`` as a symmetric :class:`LinearOperator`."""
        U = self.eigenvectors
        return LinearOperator(
            self.shape, self.apply, dtype=U.dtype, device=U.device, symmetric=True
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={self.shape[0]}, rank={self.eigenvalues.shape[0]}, "
            f"shift={self.shift:.3g}, floor={self.floor:.3g})"
        )


def _eig_from_factor(F: torch.Tensor, nu: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of ``F F^T - nu I`` restricted to ``range(F)``, eigenvalues clipped at 0:
    thin QR of ``F [n, l]``, then the SVD of the small ``R`` in float64."""
    Q, R = torch.linalg.qr(F, mode="reduced")
    W, s, _ = torch.linalg.svd(R.double(), full_matrices=False)
    evals = (s**2 - nu).clamp_min(0)
    return evals.to(F.dtype), Q @ W.to(F.dtype)


class NystromPreconditioner(LowRankPreconditioner):
    """Randomized Nystrom preconditioner for ``A + shift I`` (Frangella, Tropp & Udell 2023).

    Sketches ``Y = A Omega`` with an orthonormalised Gaussian ``Omega [n, rank]`` (one block
    product), forms the stabilised Nystrom approximation
    ``A_nys = (Y + nu Omega)(Omega^T (Y + nu Omega))^{-1}(Y + nu Omega)^T - nu I``
    (Tropp et al. 2017, ``nu ~ sqrt(n) eps ||Y||``) and its eigendecomposition
    ``U diag(Lambda) U^T``, and preconditions with it (see :class:`LowRankPreconditioner`).
    ``A_nys`` is also the best available rank-``rank`` PSD approximation of ``A``:
    ``evals``/``eigenvectors`` can be reused as such.

    Choose ``rank`` so that ``lambda_rank(A)`` is near ``shift`` (about the effective
    dimension of the regularised problem); then CG converges in a number of iterations
    nearly independent of the conditioning. Memory: three ``[n, rank]`` blocks.

    Args:
        A: PSD ``[n, n]`` tensor or LinearOperator (without the shift).
        rank: sketch size, ``1 <= rank <= n``.
        shift: the ``shift >= 0`` of the system; ``0`` needs ``A`` of rank ``>= rank``.
        seed: int, torch.Generator or None.
    """

    def __init__(
        self,
        A: LinearOperator | torch.Tensor | np.ndarray,
        rank: int,
        *,
        shift: float = 0.0,
        seed: Seed = 0,
    ) -> None:
        op = as_square_operator(A, "A", symmetric=True)
        n = op.shape[0]
        rank = check_positive_int(rank, "rank")
        if rank > n:
            raise ValueError(f"rank={rank} exceeds the operator size n={n}; pass rank <= {n}.")
        gen = make_generator(seed)
        with torch.no_grad():
            Omega = random_block(n, rank, dtype=op.dtype, device=op.device, generator=gen)
            Omega = torch.linalg.qr(Omega, mode="reduced").Q
            Y = op.matmat(Omega)
            if not bool(torch.isfinite(Y).all()):
                raise ValueError("A returned non-finite values; check the operator.")
            nu = float(np.sqrt(n) * torch.finfo(op.dtype).eps * Y.norm())
            Y = Y + nu * Omega
            core = Omega.T @ Y
            core = ((core + core.T) / 2).double()
            try:
                C, _ = jittered_cholesky(core, warn=False)
            except torch.linalg.LinAlgError as exc:
                raise ValueError(
                    "A does not look positive semi-definite (the Nystrom core "
                    "Omega^T A Omega is not PSD); the Nystrom preconditioner needs a PSD A."
                ) from exc
            # B = Y C^{-T}, so that B B^T = Y (Omega^T Y)^{-1} Y^T
            B = torch.linalg.solve_triangular(C.to(op.dtype), Y.T, upper=False).T
            evals, U = _eig_from_factor(B, nu)
        super().__init__(U, evals, shift)


class EigenProPreconditioner(LowRankPreconditioner):
    """EigenPro-style preconditioner for kernel systems ``(K + shift I)``, from a subsample.

    Picks ``subsample_size`` random points ``X_S``, takes the top ``rank`` eigenpairs
    ``(sigma_i, u_i)`` of their Gram ``K_SS`` and extends them to all points by Nystrom,
    ``F = K(X, X_S) U diag(sigma)^{-1/2}`` (computed in row tiles under
    ``memory_budget``), so that ``K ~ F F^T`` (the column-sampling Nystrom approximation);
    the exact eigendecomposition of ``F F^T`` gives ``U, Lambda`` (see
    :class:`LowRankPreconditioner`). Eigenvalues scale like ``n / subsample_size`` times
    those of ``K_SS``, as in EigenPro (Ma & Belkin 2017, 2019).

    Cost: ``subsample_size^2`` kernel entries and an eigendecomposition of that size, plus
    ``n x subsample_size`` kernel entries for the extension, far below one product with
    ``K`` when ``subsample_size << n``. Memory: ``[n, rank]``.

    Args:
        kernel: a callable ``k(X1 [a, d], X2 [b, d]) -> [a, b]`` (any
            :class:`kernelens.kernels.Kernel`, or a plain function).
        X: ``[n, d]`` points of the system.
        rank: eigendirections kept (the smallest of them sets the floor), ``< subsample_size``.
        subsample_size: points used to estimate them (default ``min(n, max(2000, 4 rank))``).
        shift: the ``shift >= 0`` of the system.
        seed: int, torch.Generator or None (the subsample).
        memory_budget: bytes for Gram tiles (default: 2 GiB, or $KERNELENS_MEMORY_BUDGET).
    """

    def __init__(
        self,
        kernel: KernelFn,
        X: torch.Tensor,
        rank: int = 100,
        *,
        subsample_size: int | None = None,
        shift: float = 0.0,
        seed: Seed = 0,
        memory_budget: int | float | None = None,
    ) -> None:
        if not callable(kernel):
            raise TypeError(
                f"kernel must be callable as kernel(X1, X2), got {type(kernel).__name__}."
            )
        X = as_tensor(X, "X", ndim=2)
        n = X.shape[0]
        rank = check_positive_int(rank, "rank")
        s = min(n, max(2000, 4 * rank)) if subsample_size is None else subsample_size
        s = check_positive_int(s, "subsample_size")
        if s > n:
            raise ValueError(f"subsample_size={s} exceeds the number of points n={n}.")
        if rank >= s:
            raise ValueError(f"rank={rank} must be smaller than subsample_size={s}.")
        budget = resolve_memory_budget(memory_budget)
        gen = make_generator(seed)
        with torch.no_grad():
            idx = torch.randperm(n, generator=gen)[:s].to(X.device)
            self.subsample = idx
            Xs = X[idx]
            Kss = kernel(Xs, Xs)
            if Kss.shape != (s, s):
                raise ValueError(
                    f"kernel(X_S, X_S) returned shape {tuple(Kss.shape)}, expected {(s, s)}."
                )
            Kss = ((Kss + Kss.T) / 2).double()
            sigma, V = torch.linalg.eigh(Kss)
            sigma, V = sigma.flip(0)[:rank], V.flip(1)[:, :rank]
            tiny = float(sigma[0]) * s * torch.finfo(X.dtype).eps
            keep = sigma > tiny
            if not bool(keep.any()):
                raise ValueError("the subsample Gram is numerically zero; check the kernel.")
            sigma, V = sigma[keep], V[:, keep]
            W = (V / sigma.sqrt()).to(X.dtype)
            F = kernel_matmul(kernel, X, Xs, W, memory_budget=budget)
            evals, U = _eig_from_factor(F)
        self.subsample_eigenvalues = sigma.to(X.dtype)
        super().__init__(U, evals, shift)
