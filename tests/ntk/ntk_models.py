"""Small models covering the architectures the NTK engine must handle, and an independent
dense float64 reference (full Jacobian by plain autograd, one backward per output)."""

from __future__ import annotations

import functools

import torch
from torch import nn


def reference_jacobian(model: nn.Module, x: torch.Tensor, params=None) -> torch.Tensor:
    """``J [N, O, P]`` by a loop over examples and outputs with ``torch.autograd.grad``."""
    named = dict(model.named_parameters())
    names = [n for n, p in named.items() if p.requires_grad] if params is None else params
    ps = [named[n] for n in names]
    rows = []
    for i in range(x.shape[0]):
        y = model(x[i : i + 1]).reshape(-1)
        per_out = []
        for a in range(y.shape[0]):
            g = torch.autograd.grad(y[a], ps, retain_graph=True, allow_unused=True)
            per_out.append(
                torch.cat(
                    [
                        (gi if gi is not None else torch.zeros_like(p)).reshape(-1)
                        for gi, p in zip(g, ps)
                    ]
                )
            )
        rows.append(torch.stack(per_out))
    return torch.stack(rows).detach()


def reference_ntk(model, x1, x2=None, params=None, output="full") -> torch.Tensor:
    J1 = reference_jacobian(model, x1, params)
    J2 = J1 if x2 is None else reference_jacobian(model, x2, params)
    K = torch.einsum("iap,jbp->ijab", J1, J2)
    if output == "trace":
        return torch.einsum("ijaa->ij", K)
    if output == "diagonal":
        return torch.einsum("ijaa->ija", K)
    return K


class MLP(nn.Sequential):
    def __init__(self, d_in=5, width=7, d_out=3, act=nn.Tanh):
        super().__init__(
            nn.Linear(d_in, width), act(), nn.Linear(width, width), act(), nn.Linear(width, d_out)
        )


class Residual(nn.Module):
    def __init__(self, d=6, d_out=2):
        super().__init__()
        self.inp = nn.Linear(4, d)
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, d)
        self.out = nn.Linear(d, d_out)

    def forward(self, x):
        h = self.inp(x)
        h = h + torch.relu(self.fc(self.norm(h)))
        return self.out(h)


class SmallCNN(nn.Module):
    def __init__(self, d_out=3):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(
            4, 4, 3, stride=2, groups=2, dilation=1, padding_mode="reflect", padding=1
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, d_out)

    def forward(self, x):
        h = torch.relu(self.bn(self.c1(x)))
        h = torch.relu(self.c2(h))
        h = nn.functional.max_pool2d(h, 2, ceil_mode=True)
        return self.fc(self.pool(h).flatten(1))


class TransformerBlock(nn.Module):
    """Embedding + positional parameter + MultiheadAttention + LayerNorm + MLP, mean-pooled."""

    def __init__(self, vocab=11, d=8, heads=2, d_out=2, batch_first=True, causal=False):
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        self.pos = nn.Parameter(torch.randn(5, d) * 0.1)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=batch_first)
        self.ln1 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.ln2 = nn.LayerNorm(d)
        self.head = nn.Linear(d, d_out)
        self.batch_first = batch_first
        self.causal = causal

    def forward(self, ids):
        h = self.emb(ids) + self.pos[: ids.shape[1]]
        if not self.batch_first:
            h = h.transpose(0, 1)
        mask = None
        if self.causal:
            L = h.shape[1] if self.batch_first else h.shape[0]
            mask = torch.triu(torch.full((L, L), float("-inf"), dtype=h.dtype), 1)
        a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        h = self.ln1(h + a)
        h = self.ln2(h + self.ff(h))
        if not self.batch_first:
            h = h.transpose(0, 1)
        return self.head(h.mean(1))


class Recurrent(nn.Module):
    def __init__(self, cell=nn.GRU, d_out=2):
        super().__init__()
        self.rnn = cell(3, 4, batch_first=True)
        self.head = nn.Linear(4, d_out)

    def forward(self, x):
        h, _ = self.rnn(x)
        return self.head(h[:, -1])


class Tied(nn.Module):
    """A shared Linear used twice, and an embedding tied to the output projection."""

    def __init__(self, vocab=7, d=5):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.shared = nn.Linear(d, d)
        self.dec = nn.Linear(d, vocab)
        self.dec.weight = self.emb.weight

    def forward(self, ids):
        h = self.emb(ids).mean(1)
        h = torch.tanh(self.shared(torch.tanh(self.shared(h))))
        return self.dec(h)


@functools.lru_cache(maxsize=256)
def cached_reference(name: str, output: str = "full", params: tuple | None = None, seed: int = 0):
    """Reference NTK of ``make(name, seed)`` between its x1 and x2 (cached across tests)."""
    model, x1, x2 = make(name, seed)
    return reference_ntk(
        model, x1, x2, params=None if params is None else list(params), output=output
    )


def make(name: str, seed: int = 0):
    """(model in float64 eval mode, x1, x2) for an architecture name."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    if name.startswith("mlp"):
        act = {"mlp_tanh": nn.Tanh, "mlp_relu": nn.ReLU, "mlp_gelu": nn.GELU}[name]
        m = MLP(act=act)
        x1, x2 = torch.randn(4, 5, generator=g), torch.randn(3, 5, generator=g)
    elif name == "residual":
        m = Residual()
        x1, x2 = torch.randn(4, 4, generator=g), torch.randn(3, 4, generator=g)
    elif name == "cnn":
        m = SmallCNN()
        with torch.no_grad():
            m.bn.running_mean.uniform_(-0.5, 0.5)
            m.bn.running_var.uniform_(0.5, 2.0)
        x1, x2 = torch.randn(3, 2, 9, 9, generator=g), torch.randn(2, 2, 9, 9, generator=g)
    elif name.startswith("transformer"):
        m = TransformerBlock(
            batch_first=name != "transformer_seqfirst", causal=name == "transformer_causal"
        )
        x1 = torch.randint(0, 11, (3, 5), generator=g)
        x2 = torch.randint(0, 11, (2, 5), generator=g)
    elif name in ("gru", "lstm"):
        m = Recurrent(nn.GRU if name == "gru" else nn.LSTM)
        x1, x2 = torch.randn(3, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    elif name == "tied":
        m = Tied()
        x1 = torch.randint(0, 7, (3, 4), generator=g)
        x2 = torch.randint(0, 7, (2, 4), generator=g)
    else:
        raise KeyError(name)
    m = m.double().eval()
    if x1.is_floating_point():
        x1, x2 = x1.double(), x2.double()
    return m, x1, x2


ARCHITECTURES = [
    "mlp_tanh",
    "mlp_relu",
    "mlp_gelu",
    "residual",
    "cnn",
    "transformer",
    "transformer_seqfirst",
    "transformer_causal",
    "gru",
    "lstm",
    "tied",
]
