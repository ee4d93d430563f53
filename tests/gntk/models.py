"""Models and independent dense references for the global NTK tests (float64)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call, jacrev


def params_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in module.named_parameters()}


def dense_jjt(states_fn, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """``J J^T`` with ``J = d states / d params`` by torch.func.jacrev (the oracle)."""
    jac = jacrev(lambda p: states_fn(p).reshape(-1))(params)
    J = torch.cat([j.reshape(j.shape[0], -1) for j in jac.values()], dim=1)
    return J @ J.T


def torch_states(module: nn.RNNBase, x: torch.Tensor, with_c: bool = False):
    """States ``[B, T, L, C, H]`` from torch's own implementation, one step at a time."""

    def fn(p):
        B, T = x.shape[:2]
        L, H = module.num_layers, module.hidden_size
        h = x.new_zeros(L, B, H)
        hx = (h, h.clone()) if isinstance(module, nn.LSTM) else h
        out = []
        for t in range(T):
            _, hx = functional_call(module, p, (x[:, t : t + 1], hx))
            if isinstance(module, nn.LSTM):
                parts = [hx[0], hx[1]] if with_c else [hx[0]]
            else:
                parts = [hx]
            out.append(torch.stack(parts, dim=1).permute(2, 0, 1, 3))  # [B, L, C, H]
        return torch.stack(out, dim=1)

    return fn


def tanh_cell(h, x, p):
    """A custom cell with a leak and a gain: h' = (1 - a) h + a tanh(W h + U x + b)."""
    a = torch.sigmoid(p["leak"])
    return (1 - a) * h + a * torch.tanh(h @ p["W"].T + x @ p["U"].T + p["b"])


def custom_params(H: int, I: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "W": torch.randn(H, H, generator=g, dtype=torch.float64) / math.sqrt(H),
        "U": torch.randn(H, I, generator=g, dtype=torch.float64),
        "b": 0.1 * torch.randn(H, generator=g, dtype=torch.float64),
        "leak": torch.tensor(0.3, dtype=torch.float64),
    }


def custom_states(x, h0):
    def fn(p):
        h, out = h0, []
        for t in range(x.shape[1]):
            h = tanh_cell(h, x[:, t], p)
            out.append(h)
        return torch.stack(out, dim=1)

    return fn


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x):
        B, T, d = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.heads, d // self.heads).unbind(2)
        att = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(d // self.heads)
        y = torch.einsum("bhts,bshd->bthd", att.softmax(-1), v).reshape(B, T, d)
        return self.out(y)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN x), then + MLP(LN x)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = SelfAttention(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyTransformer(nn.Module):
    def __init__(self, i: int = 3, d: int = 4, depth: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(i, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(depth))
        self.head = nn.Linear(d, 1)

    def block_outputs(self, x):
        h, outs = self.embed(x), []
        for b in self.blocks:
            h = b(h)
            outs.append(h)
        return outs

    def forward(self, x, states: bool = False):
        outs = self.block_outputs(x)
        if states:  # the test oracle: block outputs concatenated per example
            return torch.cat([o.reshape(x.shape[0], -1) for o in outs], dim=1)
        return self.head(outs[-1]).mean(1)


def transformer_states(model: TinyTransformer, x: torch.Tensor):
    """Block outputs concatenated per example, computed explicitly (no hooks)."""

    def fn(p):
        return functional_call(model, p, (x,), {"states": True})

    return fn


class MHABlock(nn.Module):
    """Pre-norm block around torch's nn.MultiheadAttention."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)

    def forward(self, x):
        y = self.ln(x)
        return x + self.attn(y, y, y, need_weights=False)[0]


class MHAStack(nn.Module):
    def __init__(self, i: int = 3, d: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(i, d)
        self.b0, self.b1 = MHABlock(d), MHABlock(d)

    def forward(self, x, states: bool = False):
        h0 = self.b0(self.embed(x))
        h1 = self.b1(h0)
        if states:
            return torch.cat([h0.reshape(x.shape[0], -1), h1.reshape(x.shape[0], -1)], dim=1)
        return h1.sum((1, 2))
