"""Experiment 4 (seed 002): the hidden-state NTK of a self-attention transformer is low rank.

A pre-norm transformer (``x + attn(LN x)``, then ``+ MLP(LN x)``) whose states are its blocks'
outputs over every token of every example. The Kronecker core bounds ``rank(K)`` by
``sum_W m_W rank(Z_W)`` over its linear layers (plus the LayerNorm gains); we measure the
effective rank of NTK_S as the sequence length T and the width d grow.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from ...gntk import global_ntk
from ..registry import register
from ..result import Result, Table
from ._tasks import finding

__all__ = ["PreNormTransformer", "gntk_transformer_rank"]


class _Attention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.heads, d // self.heads).unbind(2)
        att = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(d // self.heads)
        return self.out(torch.einsum("bhts,bshd->bthd", att.softmax(-1), v).reshape(B, T, d))


class _Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = _Attention(d, heads)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class PreNormTransformer(nn.Module):
    """``x [B, T, I]`` -> ``[B]``; the blocks ``blocks.0 ..`` are the states."""

    def __init__(self, inputs: int, d: int, depth: int = 2, heads: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(inputs, d)
        self.blocks = nn.ModuleList(_Block(d, heads) for _ in range(depth))
        self.head = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for b in self.blocks:
            h = b(h)
        return self.head(h).mean((1, 2))


def _measure(n: int, T: int, d: int, inputs: int, depth: int) -> list:
    torch.manual_seed(0)
    model = PreNormTransformer(inputs, d, depth).double()
    x = torch.randn(n, T, inputs, dtype=torch.float64)
    G = global_ntk(model, x, states=[f"blocks.{i}" for i in range(depth)])
    S = G.ntk.shape[0]
    eff = float(G.effective_rank(num_matvecs=60, seed=0))
    return [T, d, S, round(eff, 2), round(eff / S, 4), G.rank_bound()]


@register(
    "gntk_transformer_rank",
    title="Global NTK: low rank NTK_S of self-attention",
    area="gntk",
    full_minutes=1,
)
def gntk_transformer_rank(quick: bool = True) -> Result:
    n, inputs, depth = (2, 3, 2) if quick else (8, 4, 2)
    lengths, widths = ((3, 6), (4, 8)) if quick else ((4, 8, 16, 32), (8, 16, 32))
    rows = [_measure(n, T, widths[0], inputs, depth) for T in lengths]
    rows += [_measure(n, lengths[1], d, inputs, depth) for d in widths[1:]]
    cols = ["T", "d", "S", "effective rank", "effective rank / S", "rank bound"]
    table = Table("Effective rank of a pre-norm transformer's NTK_S (block outputs)", cols, rows)
    frac = np.array([r[4] for r in rows])
    by_t = [r for r in rows if r[1] == widths[0]]
    slope = float(np.polyfit(np.log([r[0] for r in by_t]), np.log([r[3] for r in by_t]), 1)[0])
    ok = bool(frac.max() < 0.05)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.loglog([r[2] for r in rows], [r[3] for r in rows], "o")
    ax.loglog([r[2] for r in rows], [r[2] for r in rows], "k:", lw=0.8, label="S (full rank)")
    ax.set(xlabel="states S", ylabel="effective rank", title="transformer NTK_S")
    ax.legend(fontsize=7)
    fig.tight_layout()
    claim = (
        "the NTK over the states of a self-attention transformer is "
        "structurally constrained to be low rank."
    )
    ours = (
        "over sequence lengths "
        f"{list(lengths)} and widths {list(widths)} (S = {rows[0][2]} to "
        f"{max(r[2] for r in rows)} states), the effective rank is at most "
        f"{100 * frac.max():.2f}% of S; it grows like T^{slope:.2f} with the sequence length. "
    )
    summary, claims = finding(claim, ours, ok, quick)
    return Result(
        name="gntk_transformer_rank",
        title="Global NTK: low rank NTK_S of self-attention",
        summary=summary,
        claims=claims,
        tables=[table],
        figures=[("Effective rank of NTK_S against the number of states", fig)],
        metrics={"max effective rank / S": float(frac.max()), "slope in T": slope},
    )
