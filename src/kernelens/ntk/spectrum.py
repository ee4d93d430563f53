"""Spectra of the NTK: top eigenpairs, trace, effective rank and a condition estimate,
matrix-free via kernelens.linalg.

Exactness: the trace is exact for a model (the sum of the self-kernels) and for any operator
small enough to form with at most ``3 * trace_matvecs`` products (then the participation
ratio is exact too). Elsewhere a number is a Hutch++ estimate and comes with its standard
error (0.0 where exact).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._memory import element_size, resolve_memory_budget
from .._validation import check_positive_int
from ..linalg import LinearOperator, entropy_effective_rank, hutchpp_trace, lanczos_eigh
from .operator import NTKOperator, OperatorOutput

__all__ = ["NTKSpectrum", "spectrum"]


@dataclass
class NTKSpectrum:
    """Spectral summary of an NTK operator of size n.

    Attributes:
        eigenvalues: top-k eigenvalues ``[k]``, descending.
        eigenvectors: ``[n, k]`` orthonormal (for ``output="full"`` row ``i*O + a``).
        trace: ``tr(Theta)``: exact for a model or an :class:`NTKOperator` (sum of the
            self-kernels) and for an operator of size ``n <= 3 * trace_matvecs`` (formed);
            otherwise a Hutch++ estimate.
        trace_stderr: standard error of ``trace`` (0.0 when exact).
        participation_ratio: ``tr(Theta)^2 / ||Theta||_F^2``; exact when the operator is
            formed, else ``tr(Theta^2)`` is a Hutch++ estimate.
        participation_ratio_stderr: its standard error (delta method; 0.0 when exact).
        entropy_rank_topk: entropy effective rank of the top-k eigenvalues only.
        lambda_min: smallest eigenvalue (Lanczos; about 0 when rank-deficient).
        condition: ``lambda_max / lambda_min`` (inf when lambda_min <= 0).
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    trace: float
    trace_stderr: float
    participation_ratio: float
    participation_ratio_stderr: float
    entropy_rank_topk: float
    lambda_min: float
    condition: float


def _hutchpp(op: LinearOperator, m: int, gen: torch.Generator) -> tuple[float, float]:
    """Hutch++ ``(estimate, standard error)`` of ``tr(op)`` (one home: linalg.hutchpp_trace)."""
    est, se = hutchpp_trace(op, m, seed=gen, return_stderr=True)
    return float(est), float(se)


def _trace_and_ratio(
    op: LinearOperator, m: int, seed: int, budget: int
) -> tuple[float, float, float, float]:
    """``(trace, its stderr, participation ratio, its stderr)``."""
    n = op.shape[0]
    if n <= 3 * m and n * n * element_size(op.dtype) <= budget:
        K = op.to_dense()
        tr, fro2 = float(K.diagonal().sum()), float((K * K).sum())
        if fro2 == 0:
            raise ValueError("the operator is zero, so its participation ratio is undefined.")
        return tr, 0.0, tr * tr / fro2, 0.0
    gen = torch.Generator().manual_seed(seed)
    if isinstance(op, NTKOperator):
        tr, tr_se = float(op.diagonal().sum()), 0.0
    else:
        tr, tr_se = _hutchpp(op, m, gen)
    square = LinearOperator(
        op.shape,
        lambda V: op.matmat(op.matmat(V)),
        dtype=op.dtype,
        device=op.device,
        symmetric=True,
    )
    tr2, tr2_se = _hutchpp(square, m, gen)
    if tr2 <= 0:
        raise ValueError(
            "the estimated tr(Theta^2) is not positive; raise trace_matvecs for a usable "
            "participation ratio."
        )
    pr = tr * tr / tr2
    pr_se = pr * math.hypot(2 * tr_se / abs(tr) if tr else 0.0, tr2_se / tr2)
    return tr, tr_se, pr, pr_se


def spectrum(
    model: nn.Module | LinearOperator,
    x: torch.Tensor | None = None,
    *,
    k: int = 10,
    output: OperatorOutput = "full",
    params: Sequence[str | nn.Parameter] | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
    memory_budget: int | float | None = None,
    trace_matvecs: int = 60,
    condition: bool = True,
    seed: int = 0,
    client: Any = None,
) -> NTKSpectrum:
    """Top-``k`` eigenpairs and spectral statistics of the NTK, never forming it when large.

    Args:
        model: an ``nn.Module`` (then ``x`` is required) or any symmetric LinearOperator
            (e.g. an :class:`NTKOperator` you built; ``x``, ``output``, ``params`` and
            ``weights`` are then ignored).
        x: inputs ``[N, ...]``.
        k: number of eigenpairs (at most the operator size).
        output: ``"full"`` (``N*O`` square) or ``"trace"`` (``N`` square).
        memory_budget: bytes (default: 2 GiB, or $KERNELENS_MEMORY_BUDGET); an operator is
            formed for the exact statistics only when it fits.
        trace_matvecs: products for each Hutch++ estimate (the trace of a generic operator,
            ``tr(Theta^2)`` for the participation ratio); an operator with
            ``n <= 3 * trace_matvecs`` is formed instead and every statistic is exact.
        condition: also estimate the smallest eigenvalue (one more Lanczos run).
        seed: randomness of the Lanczos start and of Hutch++.
        client: a :class:`distributed.Client` for the operator's products (see
            :class:`NTKOperator`); None computes in-process.
    """
    budget = resolve_memory_budget(memory_budget)
    if isinstance(model, LinearOperator):
        op = model
    else:
        if x is None:
            raise ValueError("x is required when model is an nn.Module; pass the inputs [N, ...].")
        op = NTKOperator(
            model,
            x,
            output=output,
            params=params,
            weights=weights,
            memory_budget=budget,
            client=client,
        )
    n = op.shape[0]
    k = check_positive_int(k, "k")
    if k > n:
        raise ValueError(f"k = {k} exceeds the operator size {n}; pass k <= {n}.")
    trace_matvecs = check_positive_int(trace_matvecs, "trace_matvecs", minimum=3)
    evals, evecs = lanczos_eigh(op, k, seed=seed)
    tr, tr_se, pr, pr_se = _trace_and_ratio(op, trace_matvecs, seed, budget)
    ent = float(entropy_effective_rank(evals.clamp_min(0)))
    lam_min = float("nan")
    cond = float("nan")
    if condition:
        lo, _ = lanczos_eigh(op, 1, largest=False, seed=seed, warn=False)
        lam_min = float(lo[0])
        cond = float(evals[0]) / lam_min if lam_min > 0 else float("inf")
    return NTKSpectrum(
        eigenvalues=evals,
        eigenvectors=evecs,
        trace=tr,
        trace_stderr=tr_se,
        participation_ratio=pr,
        participation_ratio_stderr=pr_se,
        entropy_rank_topk=ent,
        lambda_min=lam_min,
        condition=cond,
    )
