"""Helpers shared by the iterative routines of :mod:`kernelens.linalg` (not public API)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from .._validation import check_finite
from .operator import LinearOperator, aslinearoperator

__all__ = [
    "ConvergenceWarning",
    "Seed",
    "as_square_operator",
    "default_tol",
    "make_generator",
    "orthonormalize",
    "random_block",
]

#: What every randomized routine accepts as ``seed``.
Seed = int | torch.Generator | None


class ConvergenceWarning(UserWarning):
    """An iterative routine stopped before reaching its tolerance; its result is inexact."""


def default_tol(dtype: torch.dtype, *, f64: float, f32: float) -> float:
    """A tolerance that the dtype can reach: ``f64`` for float64, ``f32`` for lower precision."""
    return f64 if dtype == torch.float64 else f32


def make_generator(seed: Seed) -> torch.Generator:
    """A CPU generator from ``seed`` (int, an existing CPU generator, or None for a random seed).

    Random blocks are drawn on the CPU and moved to the operator's device, so one seed gives
    the same numbers on every device.
    """
    if isinstance(seed, torch.Generator):
        return seed
    if seed is None:
        return torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(
            f"seed must be an int, a torch.Generator or None, got {type(seed).__name__} {seed!r}."
        )
    return torch.Generator().manual_seed(int(seed))


def random_block(
    n: int,
    k: int,
    *,
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator,
    kind: str = "gaussian",
) -> torch.Tensor:
    """A ``[n, k]`` block of i.i.d. standard Gaussian or Rademacher (+-1) entries."""
    gdev = generator.device
    if kind == "gaussian":
        Z = torch.randn(n, k, generator=generator, dtype=dtype, device=gdev)
    elif kind == "rademacher":
        Z = torch.randint(0, 2, (n, k), generator=generator, device=gdev).to(dtype) * 2 - 1
    else:  # pragma: no cover - internal misuse
        raise ValueError(f"unknown random block kind {kind!r}.")
    return Z.to(device)


def orthonormalize(Y: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis ``[n, k]`` of the columns of ``Y [n, k]`` (thin QR)."""
    return torch.linalg.qr(Y, mode="reduced").Q


def _symmetry_probe(op: LinearOperator, name: str) -> None:
    """Raise if ``u^T A v`` and ``v^T A u`` disagree for two random vectors (2 matvecs)."""
    n = op.shape[0]
    gen = torch.Generator().manual_seed(12345)
    Z = random_block(n, 2, dtype=op.dtype, device=op.device, generator=gen)
    AZ = op.matmat(Z)
    uAv = float(Z[:, 0] @ AZ[:, 1])
    vAu = float(Z[:, 1] @ AZ[:, 0])
    scale = float(AZ.norm()) * float(Z.norm()) + torch.finfo(op.dtype).tiny
    tol = 10 * math.sqrt(torch.finfo(op.dtype).eps)
    if not math.isfinite(uAv) or not math.isfinite(vAu):
        raise ValueError(f"{name} returned non-finite values for finite input vectors.")
    if abs(uAv - vAu) > tol * scale:
        raise ValueError(
            f"{name} is not symmetric: u^T A v = {uAv:.6g} but v^T A u = {vAu:.6g} for random "
            "u, v. This routine needs a symmetric operator; pass A + A^T over 2 or, if A is "
            "symmetric, construct the LinearOperator with symmetric=True."
        )


def as_square_operator(
    A: LinearOperator | torch.Tensor | np.ndarray,
    name: str = "A",
    *,
    symmetric: bool = True,
) -> LinearOperator:
    """Validate ``A`` and return it as a square :class:`LinearOperator`.

    Dense input must be 2-D, square and finite (and symmetric to a dtype-dependent tolerance
    when ``symmetric``). A LinearOperator not declared ``symmetric=True`` gets a cheap
    randomized symmetry probe (two matvecs) when ``symmetric`` is requested.
    """
    if isinstance(A, np.ndarray):
        A = torch.from_numpy(np.ascontiguousarray(A))
    if isinstance(A, torch.Tensor):
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"{name} must be a square [n, n] matrix, got shape {tuple(A.shape)}.")
        if not A.is_floating_point():
            raise TypeError(f"{name} must be floating point, got dtype {A.dtype}.")
        if A.shape[0] == 0:
            raise ValueError(f"{name} is empty (shape {tuple(A.shape)}).")
        check_finite(A, name)
        if symmetric:
            tol = 10 * math.sqrt(torch.finfo(A.dtype).eps)
            scale = float(A.abs().max())
            asym = float((A - A.T).abs().max())
            if asym > tol * scale:
                raise ValueError(
                    f"{name} is not symmetric (max |A - A^T| = {asym:.3g}, max |A| = "
                    f"{scale:.3g}); pass (A + A.T) / 2 if the asymmetry is round-off."
                )
        return aslinearoperator(A, symmetric=symmetric)
    if not isinstance(A, LinearOperator):
        raise TypeError(
            f"{name} must be a LinearOperator, torch.Tensor or numpy array, got {type(A).__name__}."
        )
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"{name} must be square, got an operator of shape {A.shape}.")
    if A.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {A.shape}).")
    if not A.dtype.is_floating_point:
        raise TypeError(f"{name} must have a floating dtype, got {A.dtype}.")
    if symmetric and not A.symmetric:
        _symmetry_probe(A, name)
    return A


def warn_not_converged(message: str, *, stacklevel: int = 3) -> None:
    """Emit a :class:`ConvergenceWarning`."""
    warnings.warn(message, ConvergenceWarning, stacklevel=stacklevel)
