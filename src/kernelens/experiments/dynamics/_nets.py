"""Networks the dynamics experiments train: MLPs in the NTK parameterisation, whose kernel
stays nearly fixed during training as the width grows."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ScaledLinear", "ntk_mlp"]


class ScaledLinear(nn.Module):
    """``Linear(x / sqrt(fan_in))`` with N(0, 1) weights and N(0, bias_std^2) biases: the NTK
    parameterisation (Jacot et al. 2018)."""

    def __init__(self, fan_in: int, fan_out: int, bias_std: float = 0.1) -> None:
        super().__init__()
        self.linear = nn.Linear(fan_in, fan_out)
        nn.init.normal_(self.linear.weight)
        nn.init.normal_(self.linear.bias, std=bias_std)
        self.scale = fan_in**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.scale)


def ntk_mlp(
    d_in: int,
    width: int,
    d_out: int = 1,
    *,
    depth: int = 2,
    act: type[nn.Module] = nn.ReLU,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> nn.Module:
    """``depth`` hidden layers of ``width`` units, activation ``act``, NTK parameterisation."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    fan = d_in
    for _ in range(depth):
        layers += [ScaledLinear(fan, width), act()]
        fan = width
    layers.append(ScaledLinear(fan, d_out))
    return nn.Sequential(*layers).to(dtype)
