"""The NTK diagonal ``Theta(x, x)`` against the saliency ``||grad_x f(x)||`` across examples."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy import stats
from torch import nn

from .._progress import progress
from ..ntk import empirical_ntk
from ..ntk._input_grad import input_gradients
from ..ntk._model import check_input

__all__ = ["SaliencyNTK", "ntk_diagonal", "saliency_vs_ntk_diagonal"]

#: Examples per call of the NTK diagonal (each chunk forms a [chunk, chunk] trace NTK).
CHUNK = 64


class SaliencyNTK(NamedTuple):
    """Correlations across examples and the two per-example arrays ``[N]``; ``input_grads``
    ``[N, O, *x.shape[1:]]`` holds the saliency maps."""

    pearson: float
    spearman: float
    ntk_diagonal: torch.Tensor
    saliency: torch.Tensor
    input_grads: torch.Tensor


def ntk_diagonal(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``Theta(x_i, x_i) = sum_a ||d f_a(x_i) / d theta||^2`` for every example, ``[N]``."""
    x = check_input(x, "x")
    parts = []
    for s in progress(range(0, x.shape[0], CHUNK), desc="NTK diagonal"):
        k = empirical_ntk(model, x[s : s + CHUNK], output="trace")
        parts.append(k.diagonal())
    return torch.cat(parts)


def saliency_vs_ntk_diagonal(model: nn.Module, x: torch.Tensor) -> SaliencyNTK:
    """Pearson and Spearman correlation across examples between the trace-NTK diagonal
    ``Theta(x, x)`` and the saliency ``||grad_x f(x)||`` (the Frobenius norm of the input
    Jacobian, summed over outputs like the trace NTK).

    Args:
        model: an ``nn.Module`` in a deterministic mode (``eval()`` for dropout / BatchNorm).
        x: float inputs ``[N, ...]`` with ``N >= 3``.
    """
    x = check_input(x, "x")
    if x.shape[0] < 3:
        raise ValueError(f"x has {x.shape[0]} examples; correlations need at least 3.")
    diag = ntk_diagonal(model, x)
    grads = input_gradients(model, x)
    sal = grads.reshape(x.shape[0], -1).norm(dim=1)
    a, b = diag.double().numpy(), sal.double().numpy()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        raise ValueError(
            "the NTK diagonal or the saliency is constant across these examples, so no "
            "correlation is defined; use inputs that differ."
        )
    pearson = float(np.corrcoef(a, b)[0, 1])
    spearman = float(stats.spearmanr(a, b).statistic)
    return SaliencyNTK(pearson, spearman, diag, sal, grads)
