"""Layer coverage of the structured method: convolution variants, norms, attention options,
layouts, in-place ops and parameters used outside their module, each against the dense
float64 reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ntk_models import reference_ntk
from torch import nn

from kernelens import empirical_ntk
from kernelens.ntk import explain


class Seq(nn.Module):
    def __init__(self, *mods, head_in: int, pool=True):
        super().__init__()
        self.body = nn.Sequential(*mods)
        self.head = nn.Linear(head_in, 2)
        self.pool = pool

    def forward(self, x):
        h = self.body(x)
        h = h.flatten(2).mean(-1) if self.pool else h
        return self.head(torch.tanh(h))


class Attention(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.attn = nn.MultiheadAttention(6, 2, batch_first=True, **kw)
        self.kv = nn.Linear(6, kw.get("kdim") or 6)

    def forward(self, x):
        kv = self.kv(x)
        mask = torch.zeros(x.shape[0], x.shape[1], dtype=torch.bool)
        mask[:, -1] = True
        out, w = self.attn(x, kv, kv, key_padding_mask=mask, need_weights=True)
        return out.mean(1) + w.sum((1, 2))[:, None]


class SeqFirstLinear(nn.Module):
    """A Linear applied to [T, N, d] (example axis second)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.tanh(self.lin(x.transpose(0, 1)))
        return self.out(h.mean(0))


class InPlace(nn.Module):
    """In-place ops on covered layers' outputs."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 5)
        self.b = nn.Linear(5, 5)
        self.c = nn.Linear(5, 2)

    def forward(self, x):
        h = self.a(x)
        g = F.relu(self.b(h), inplace=True)
        return self.c(torch.tanh(h) * g)


class DirectUse(nn.Module):
    """An embedding whose weight is also used directly as an output projection."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(6, 4)
        self.scale = nn.Parameter(torch.tensor(1.3))
        self.unused = nn.Linear(4, 4)

    def forward(self, ids):
        h = torch.tanh(self.emb(ids).mean(1)) * self.scale
        return F.linear(h, self.emb.weight)


def rmsnorm_or_layernorm(d):
    return nn.RMSNorm(d) if hasattr(nn, "RMSNorm") else nn.LayerNorm(d)


CASES = {
    "conv1d_same_dilated": (
        lambda: Seq(nn.Conv1d(2, 4, 3, padding="same", dilation=2), head_in=4),
        (3, 2, 9),
    ),
    "conv1d_stride_circular": (
        lambda: Seq(nn.Conv1d(2, 4, 3, stride=2, padding=1, padding_mode="circular"), head_in=4),
        (3, 2, 8),
    ),
    "conv2d_groups_nobias": (
        lambda: Seq(nn.Conv2d(4, 6, (2, 3), groups=2, bias=False, stride=(1, 2)), head_in=6),
        (3, 4, 5, 6),
    ),
    "conv2d_replicate": (
        lambda: Seq(nn.Conv2d(2, 3, 3, padding=2, dilation=2, padding_mode="replicate"), head_in=3),
        (2, 2, 6, 6),
    ),
    "conv3d": (lambda: Seq(nn.Conv3d(2, 3, 2, stride=(1, 2, 1)), head_in=3), (2, 2, 3, 4, 3)),
    "groupnorm": (lambda: Seq(nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4), head_in=4), (3, 2, 5, 5)),
    "batchnorm1d": (
        lambda: Seq(nn.Conv1d(2, 3, 2), nn.BatchNorm1d(3), head_in=3),
        (3, 2, 6),
    ),
    "batchnorm1d_flat": (
        lambda: Seq(nn.Linear(3, 4), nn.BatchNorm1d(4), head_in=4, pool=False),
        (3, 3),
    ),
    "layernorm_2d_nobias": (
        lambda: Seq(nn.Linear(3, 4), nn.LayerNorm((2, 4), bias=False), head_in=2, pool=True),
        (3, 2, 3),
    ),
    "rmsnorm": (
        lambda: Seq(nn.Linear(3, 4), rmsnorm_or_layernorm(4), head_in=4, pool=False),
        (3, 3),
    ),
    "linear_sequence": (
        lambda: Seq(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 4), head_in=4, pool=False),
        (3, 5, 3),
    ),
    "mha_kdim_bias_kv_zero_attn": (
        lambda: Attention(kdim=4, vdim=4, add_bias_kv=True, add_zero_attn=True),
        (3, 4, 6),
    ),
    "mha_no_bias": (lambda: Attention(bias=False), (3, 4, 6)),
    "seq_first_linear": (SeqFirstLinear, (3, 4, 3)),
    "inplace_on_outputs": (InPlace, (3, 4)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("method", ["structured", "auto"])
def test_layer_case(case, method):
    factory, shape = CASES[case]
    torch.manual_seed(1)
    model = factory().double().eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    x1 = torch.randn(*shape, dtype=torch.float64)
    x2 = torch.randn(2, *shape[1:], dtype=torch.float64)
    ref = reference_ntk(model, x1, x2)
    got = empirical_ntk(model, x1, x2, method=method)
    assert float((got - ref).abs().max() / ref.abs().max()) < 1e-10


def test_weight_used_outside_its_module_falls_back_exactly():
    torch.manual_seed(0)
    model = DirectUse().double()
    ids = torch.randint(0, 6, (3, 4))
    ids2 = torch.randint(0, 6, (2, 4))
    ref = reference_ntk(model, ids, ids2)
    got = empirical_ntk(model, ids, ids2, method="structured")
    assert float((got - ref).abs().max() / ref.abs().max()) < 1e-10
    plan = explain(model, ids)
    fallback = [g for g in plan.groups if g.module == "<not covered>"]
    assert fallback and "emb.weight" in fallback[0].names
    # the unused Linear is covered and contributes zero
    assert torch.equal(
        empirical_ntk(model, ids, params=["unused.weight"]), torch.zeros(3, 3, 6, 6).double()
    )


def test_single_example_and_int_ids_without_pair_probe():
    torch.manual_seed(0)
    model = SeqFirstLinear().double()
    x = torch.randn(1, 4, 3, dtype=torch.float64)
    ref = reference_ntk(model, x)
    assert float((empirical_ntk(model, x) - ref).abs().max() / ref.abs().max()) < 1e-10


def test_fused_transformer_layer_fast_path_is_detected():
    """nn.TransformerEncoderLayer in eval mode on an input that needs no grad takes a fused
    kernel that bypasses its submodules; the plan's autograd check sends it to the fallback."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.layer(x).mean(1))

    model = Net().double().eval()
    x1, x2 = torch.randn(3, 5, 4, dtype=torch.float64), torch.randn(2, 5, 4, dtype=torch.float64)
    ref = reference_ntk(model, x1, x2)
    for method in ("structured", "auto", "jacobian"):
        got = empirical_ntk(model, x1, x2, method=method)
        assert float((got - ref).abs().max() / ref.abs().max()) < 1e-10
