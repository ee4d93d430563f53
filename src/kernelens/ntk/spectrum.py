"""Spectra of the NTK: top eigenpairs, trace, effective rank and a condition estimate,
matrix-free via kernelens.linalg."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._validation import check_positive_int
from ..linalg import (
    LinearOperator,
    entropy_effective_rank,
    hutchpp_trace,
    lanczos_eigh,
    participation_ratio,
)
from .operator import NTKOperator

__all__ = ["NTKSpectrum", "spectrum"]


@dataclass
class NTKSpectrum:
    """Spectral summary of an NTK operator of size n.

    Attributes:
        eigenvalues: top-k eigenvalues ``[k]``, descending.
        eigenvectors: ``[n, k]`` orthonormal (for ``output="full"`` row ``i*O + a``).
        trace: Hutch++ estimate of ``tr(Theta)`` (exact when the operator is small).
        participation_ratio: ``tr(Theta)^2 / ||Theta||_F^2`` (Hutch++ estimates).
        entropy_rank_topk: entropy effective rank of the top-k eigenvalues only.
        lambda_min: smallest eigenvalue (Lanczos; about 0 when rank-deficient).
        condition: ``lambda_max / lambda_min`` (inf when lambda_min <= 0).
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    trace: float
    participation_ratio: float
    entropy_rank_topk: float
    lambda_min: float
    condition: float


def spectrum(
    model: nn.Module | LinearOperator,
    x: torch.Tensor | None = None,
    *,
    k: int = 10,
    output: str = "full",
    params: Sequence[str | nn.Parameter] | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
    memory_budget: int | float | None = None,
    trace_matvecs: int = 60,
    condition: bool = True,
    seed: int = 0,
) -> NTKSpectrum:
    """Top-``k`` eigenpairs and spectral statistics of the NTK, never forming it when large.

    Args:
        model: an ``nn.Module`` (then ``x`` is required) or any symmetric LinearOperator
            (e.g. an :class:`NTKOperator` you built; ``x``, ``output``, ``params``,
            ``weights`` and ``memory_budget`` are then ignored).
        x: inputs ``[N, ...]``.
        k: number of eigenpairs (at most the operator size).
        output: ``"full"`` (``N*O`` square) or ``"trace"`` (``N`` square).
        trace_matvecs: Hutch++ products for the trace and the participation ratio.
        condition: also estimate the smallest eigenvalue (one more Lanczos run).
        seed: randomness of the Lanczos start and of Hutch++.
    """
    if isinstance(model, LinearOperator):
        op = model
    else:
        if x is None:
            raise ValueError("x is required when model is an nn.Module; pass the inputs [N, ...].")
        op = NTKOperator(
            model, x, output=output, params=params, weights=weights, memory_budget=memory_budget
        )
    n = op.shape[0]
    k = check_positive_int(k, "k")
    if k > n:
        raise ValueError(f"k = {k} exceeds the operator size {n}; pass k <= {n}.")
    trace_matvecs = check_positive_int(trace_matvecs, "trace_matvecs", minimum=3)
    evals, evecs = lanczos_eigh(op, k, seed=seed)
    trace = float(hutchpp_trace(op, trace_matvecs, seed=seed))
    pr = float(participation_ratio(op, num_matvecs=trace_matvecs, seed=seed))
    ent = float(entropy_effective_rank(evals.clamp_min(0)))
    lam_min = float("nan")
    cond = float("nan")
    if condition:
        lo, _ = lanczos_eigh(op, 1, largest=False, seed=seed, warn=False)
        lam_min = float(lo[0])
        cond = float(evals[0]) / lam_min if lam_min > 0 else float("inf")
    return NTKSpectrum(evals, evecs, trace, pr, ent, lam_min, cond)
