"""Top-k eigenpairs of a symmetric operator by thick-restart (block) Lanczos.

The Krylov basis is fully reorthogonalised (classical Gram-Schmidt, twice), so no spurious
copies of converged eigenvalues appear, and it is restarted "thickly" (the wanted Ritz
vectors are kept, Wu & Simon 2000; a symmetric Krylov-Schur) so memory stays at ``ncv``
vectors of length ``n`` however many iterations are needed.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._validation import check_positive, check_positive_int
from ._common import (
    Seed,
    as_square_operator,
    default_tol,
    make_generator,
    random_block,
    warn_not_converged,
)
from .operator import LinearOperator

__all__ = ["lanczos_eigh"]


def _orthogonalize(V: torch.Tensor, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove from ``W`` its components in the orthonormal columns of ``V`` (CGS, twice).

    Returns the projected ``W`` and the coefficients ``C = V^T W_original``.
    """
    C = V.T @ W
    W = W - V @ C
    C2 = V.T @ W
    W = W - V @ C2
    return W, C + C2


def _new_block(
    V: torch.Tensor,
    W: torch.Tensor,
    scale: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal ``Q [n, b]`` spanning ``W`` (already orthogonal to ``V``) and ``R [b, b]``
    with ``W = Q R``. Directions that vanished (an invariant subspace was found) are replaced
    by random vectors orthogonal to everything so far, with zero coupling."""
    Q, R = torch.linalg.qr(W, mode="reduced")
    thresh = 100 * torch.finfo(W.dtype).eps * max(scale, torch.finfo(W.dtype).tiny)
    dead = R.diagonal().abs() <= thresh
    if bool(dead.any()):
        R[dead, :] = 0
        fresh = random_block(
            W.shape[0], int(dead.sum()), dtype=W.dtype, device=W.device, generator=generator
        )
        keep = Q[:, ~dead]
        basis = torch.cat([V, keep], dim=1)
        fresh, _ = _orthogonalize(basis, fresh)
        fresh = torch.linalg.qr(fresh, mode="reduced").Q
        fresh, _ = _orthogonalize(basis, fresh)
        Q = Q.clone()
        Q[:, dead] = torch.linalg.qr(fresh, mode="reduced").Q
    return Q, R


def _dense_eigh(op: LinearOperator, k: int, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    A = op.to_dense()
    A = (A + A.T) / 2
    evals, evecs = torch.linalg.eigh(A)
    idx = torch.arange(A.shape[0] - 1, A.shape[0] - 1 - k, -1) if largest else torch.arange(k)
    return evals[idx], evecs[:, idx]


def lanczos_eigh(
    A: LinearOperator | torch.Tensor | np.ndarray,
    k: int,
    *,
    largest: bool = True,
    tol: float | None = None,
    max_iter: int | None = None,
    ncv: int | None = None,
    block_size: int = 1,
    v0: torch.Tensor | None = None,
    seed: Seed = 0,
    warn: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest (or smallest) algebraic eigenpairs of a symmetric operator.

    Thick-restart Lanczos with full reorthogonalisation, using only ``A.matmat``. A Ritz pair
    ``(theta, v)`` is accepted when its residual ``||A v - theta v||`` (read off the Krylov
    recurrence, exact up to round-off) is at most ``tol * max|theta|``; the eigenvalue error
    is then at most ``residual^2 / gap`` and the eigenvector angle ``residual / gap``.

    Args:
        A: symmetric ``[n, n]`` tensor or LinearOperator (one not declared symmetric gets a
            two-matvec symmetry probe).
        k: number of eigenpairs, ``1 <= k <= n``.
        largest: the largest algebraic eigenvalues (default) or the smallest.
        tol: relative residual target (default ``1e-10`` in float64, ``1e-4`` in float32).
        max_iter: cap on operator applications, counted in vectors (default
            ``max(1000, 30 ncv)``, at most ``10 n``).
        ncv: Krylov basis size kept in memory, ``>= k + 2 block_size`` (default
            ``max(2 k, 20) + 4 block_size``); memory is ``ncv`` vectors of length ``n``.
            If ``n <= ncv`` the operator is formed densely and solved exactly instead.
        block_size: vectors per operator application. Use ``> 1`` when ``A.matmat`` on a
            block costs about the same as on one vector (tiled kernel Grams, dense
            matrices), or to resolve eigenvalues of multiplicity ``> 1`` reliably; single
            vector Lanczos finds each repeated eigenvalue once and relies on round-off for
            the other copies.
        v0: starting vector ``[n]`` or block ``[n, block_size]`` (default Gaussian).
        seed: int, torch.Generator or None for the random start and restarts.
        warn: warn (:class:`ConvergenceWarning`) when some pair did not reach ``tol``.

    Returns:
        ``(evals [k], evecs [n, k])``, evals sorted descending when ``largest`` (ascending
        otherwise), evecs orthonormal, in the dtype and on the device of ``A``.
    """
    op = as_square_operator(A, "A", symmetric=True)
    n = op.shape[0]
    k = check_positive_int(k, "k")
    if k > n:
        raise ValueError(f"k={k} exceeds the operator size n={n}; pass k <= {n}.")
    b = check_positive_int(block_size, "block_size")
    tol = default_tol(op.dtype, f64=1e-10, f32=1e-4) if tol is None else check_positive(tol, "tol")
    ncv = max(2 * k, 20) + 4 * b if ncv is None else check_positive_int(ncv, "ncv")
    if ncv < k + 2 * b:
        raise ValueError(f"ncv={ncv} is too small; it must be >= k + 2 * block_size = {k + 2 * b}.")
    if max_iter is None:
        max_iter = min(max(1000, 30 * ncv), 10 * n)
    max_iter = check_positive_int(max_iter, "max_iter")
    if max_iter < k + b:
        raise ValueError(f"max_iter={max_iter} must be >= k + block_size = {k + b}.")
    if n <= ncv:
        with torch.no_grad():
            return _dense_eigh(op, k, largest)

    sign = 1.0 if largest else -1.0
    gen = make_generator(seed)
    dtype, device = op.dtype, op.device
    with torch.no_grad():
        if v0 is None:
            start = random_block(n, b, dtype=dtype, device=device, generator=gen)
        else:
            start = torch.as_tensor(v0, dtype=dtype, device=device)
            start = start[:, None] if start.ndim == 1 else start
            if start.shape != (n, b):
                raise ValueError(
                    f"v0 must be [{n}] or [{n}, {b}] (block_size={b}), got {tuple(start.shape)}."
                )
            if not bool(torch.isfinite(start).all()) or float(start.norm()) == 0:
                raise ValueError("v0 must be finite and non-zero.")
        V = torch.zeros(n, ncv, dtype=dtype, device=device)
        H = np.zeros((ncv, ncv))
        V[:, :b], _ = _new_block(V[:, :0], start, float(start.norm()), gen)
        m = 0  # expanded columns; V[:, m:m+b] is the block whose image comes next
        used = 0
        scale = 0.0
        theta = np.zeros(0)
        Y = np.zeros((0, 0))
        resid = np.full(0, np.inf)
        converged = False
        while used + b <= max_iter:
            # expand: image of the next block, orthogonalised against the whole basis
            W = sign * op.matmat(V[:, m : m + b])
            if not bool(torch.isfinite(W).all()):
                raise ValueError("A returned non-finite values; check the operator.")
            used += b
            scale = max(scale, float(W.norm(dim=0).max()))
            W, C = _orthogonalize(V[:, : m + b], W)
            Cn = C.double().cpu().numpy()
            H[: m + b, m : m + b] = Cn
            H[m : m + b, : m + b] = Cn.T
            m += b
            Q, R = _new_block(V[:, :m], W, scale, gen)
            V[:, m : m + b] = Q
            Rn = R.double().cpu().numpy()
            H[m : m + b, m - b : m] = Rn
            H[m - b : m, m : m + b] = Rn.T

            # Ritz pairs of the expanded part; residual norms from the coupling block
            Hm = (H[:m, :m] + H[:m, :m].T) / 2
            theta, Y = np.linalg.eigh(Hm)
            order = np.argsort(-theta)
            theta, Y = theta[order], Y[:, order]
            resid = np.linalg.norm(H[m : m + b, :m] @ Y, axis=0)
            ref = max(float(np.abs(theta).max()), np.finfo(float).tiny)
            if m >= k and bool(np.all(resid[:k] <= tol * ref)):
                converged = True
                break
            if m + 2 * b > ncv:
                # thick restart: keep the wanted Ritz vectors and the unexpanded block
                p = min(max(k + (m - k) // 2, k), ncv - 2 * b)
                Yp = torch.as_tensor(Y[:, :p], dtype=dtype, device=device)
                V[:, :p] = V[:, :m] @ Yp
                V[:, p : p + b] = V[:, m : m + b].clone()
                coupling = H[m : m + b, :m] @ Y[:, :p]
                H[:] = 0
                H[:p, :p] = np.diag(theta[:p])
                H[p : p + b, :p] = coupling
                H[:p, p : p + b] = coupling.T
                V[:, p + b :] = 0
                m = p
        Yk = torch.as_tensor(Y[:, :k], dtype=dtype, device=device)
        evecs = V[:, : Y.shape[0]] @ Yk
        evals = torch.as_tensor(sign * theta[:k], dtype=dtype, device=device)
    if warn and not converged:
        ref = max(float(np.abs(theta).max()) if theta.size else 0.0, np.finfo(float).tiny)
        worst = float(np.max(resid[:k]) / ref) if resid.size >= k else math.inf
        warn_not_converged(
            f"lanczos_eigh did not converge: after {used} operator applications the worst of "
            f"the {k} wanted relative residuals is {worst:.3g} > tol={tol:.3g}. Raise max_iter "
            "or ncv, or loosen tol."
        )
    return evals, evecs
