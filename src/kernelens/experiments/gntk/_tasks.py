"""Shared pieces of the global-NTK experiments: generated memory tasks, small recurrent
models with a controlled recurrent gain, full-batch training, and spectrum helpers."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ...gntk import GlobalNTK
from ..result import Claim

__all__ = [
    "RecurrentModel",
    "delayed_copy",
    "finding",
    "flip_flop",
    "fraction_in_span",
    "make_model",
    "train",
    "verdict",
]


def flip_flop(
    n: int, steps: int, channels: int = 3, p: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The flip-flop memory task: ``x [n, T, C]`` holds sparse +-1 pulses (probability ``p``
    per step and channel); the target ``y [n, T, C]`` is the sign of the last pulse on each
    channel (0 before the first), so each output must remember one bit."""
    g = torch.Generator().manual_seed(seed)
    pulse = torch.rand(n, steps, channels, generator=g) < p
    sign = torch.where(torch.rand(n, steps, channels, generator=g) < 0.5, -1.0, 1.0)
    x = (pulse * sign).double()
    y = torch.zeros_like(x)
    state = torch.zeros(n, channels, dtype=torch.float64)
    for t in range(steps):
        state = torch.where(pulse[:, t], x[:, t], state)
        y[:, t] = state
    return x, y


def delayed_copy(
    n: int, steps: int, delays: tuple[int, ...], seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A scalar white-noise input ``x [n, T, 1]``; component ``c`` of the target is the input
    ``delays[c]`` steps ago (0 before it exists): ``y [n, T, len(delays)]``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, steps, 1, generator=g, dtype=torch.float64)
    y = torch.zeros(n, steps, len(delays), dtype=torch.float64)
    for c, d in enumerate(delays):
        y[:, d:, c] = x[:, : steps - d, 0]
    return x, y


class RecurrentModel(nn.Module):
    """``y_t = readout(h_t)`` over a batch-first ``nn.RNN`` / ``nn.GRU`` (``x [n, T, I]`` ->
    ``[n, T, O]``)."""

    def __init__(self, rnn: nn.RNNBase, outputs: int) -> None:
        super().__init__()
        self.rnn = rnn
        self.readout = nn.Linear(rnn.hidden_size, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.rnn(x)[0])


def make_model(
    kind: str, inputs: int, hidden: int, outputs: int, *, gain: float = 1.0, seed: int = 0
) -> RecurrentModel:
    """A float64 model whose recurrent weights are ``N(0, gain^2 / H)`` (gain < 1 ordered,
    > 1 chaotic for a tanh RNN), input weights ``N(0, 1 / I)``, zero biases."""
    torch.manual_seed(seed)
    cls = {"rnn": nn.RNN, "gru": nn.GRU}[kind]
    rnn = cls(inputs, hidden, batch_first=True).double()
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            if name.startswith("weight_hh"):
                p.normal_(0, gain / math.sqrt(hidden))
            elif name.startswith("weight_ih"):
                p.normal_(0, 1 / math.sqrt(inputs))
            else:
                p.zero_()
    model = RecurrentModel(rnn, outputs).double()
    with torch.no_grad():
        model.readout.weight.normal_(0, 1 / math.sqrt(hidden))
        model.readout.bias.zero_()
    return model


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr: float,
    optimizer: str = "adam",
    checkpoints: tuple[int, ...] = (),
    on_checkpoint: Callable[[int], None] | None = None,
) -> list[float]:
    """Full-batch training on the mean squared error; returns the loss per step and calls
    ``on_checkpoint(step)`` before the steps listed in ``checkpoints`` (and after the last
    one if ``steps`` is listed)."""
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(model.parameters(), lr)
    losses = []
    for step in range(steps + 1):
        if step in checkpoints and on_checkpoint is not None:
            on_checkpoint(step)
        if step == steps:
            break
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def fraction_in_span(basis: torch.Tensor, v: torch.Tensor) -> float:
    """``||Q^T v||^2 / ||v||^2`` for the orthonormalised columns ``Q`` of ``basis [n, k]``."""
    q = torch.linalg.qr(basis, mode="reduced").Q
    return float((q.T @ v).pow(2).sum() / v.pow(2).sum())


def spectrum_dense(G: GlobalNTK) -> np.ndarray:
    """All eigenvalues of NTK_S, descending (small cases)."""
    N = G.ntk.to_dense()
    return torch.linalg.eigvalsh((N + N.T) / 2).flip(0).clamp_min(0).numpy()


def verdict(ok: bool, quick: bool) -> str:
    """ "reproduced" / "not reproduced", or "inconclusive (quick mode)" at smoke-test sizes."""
    if quick:
        return "inconclusive (quick mode: smoke-test sizes)"
    return "reproduced" if ok else "not reproduced"


def finding(claim: str, ours: str, ok: bool, quick: bool) -> tuple[str, list[Claim]]:
    """The summary ``**Claim** ... **Ours** ... **Verdict**`` and the matching :class:`Claim`
    (verdict "inconclusive" in quick mode)."""
    claim, ours = claim.strip(), ours.strip()
    summary = f"**Claim** (seed 002): {claim} **Ours**: {ours} **Verdict**: {verdict(ok, quick)}."
    word = "inconclusive" if quick else ("reproduced" if ok else "not reproduced")
    return summary, [Claim(claim, ours, word, source="seed 002 (The Global Empirical NTK)")]
