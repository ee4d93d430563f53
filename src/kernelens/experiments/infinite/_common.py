"""Small helpers shared by the infinite-width experiments."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["circle_points", "sphere_points", "verdict"]


def sphere_points(n: int, d: int, seed: int) -> torch.Tensor:
    """``n`` points uniformly on the unit sphere in ``d`` dimensions, float64 ``[n, d]``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


def circle_points(angles: np.ndarray) -> torch.Tensor:
    """Points ``(cos t, sin t)`` on the unit circle, ``[len(angles), 2]``."""
    t = torch.as_tensor(angles, dtype=torch.float64)
    return torch.stack([torch.cos(t), torch.sin(t)], dim=1)


def verdict(ok: bool, quick: bool) -> str:
    """``reproduced`` / ``not reproduced`` (``inconclusive`` in quick mode when it fails)."""
    if ok:
        return "reproduced"
    return "inconclusive (quick mode)" if quick else "not reproduced"
