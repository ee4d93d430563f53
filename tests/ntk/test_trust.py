"""Issue 10, NTK engine: cases where a check could not see what it guards. Each result is
exact (against the dense autograd reference) or refused with a named error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ntk_models import reference_ntk
from torch import nn

from kernelens import empirical_ntk
from kernelens.linalg import DenseOperator
from kernelens.ntk import (
    BatchCouplingError,
    NTKOperator,
    RandomForwardError,
    explain,
    jacobian_factors,
    jvp,
    spectrum,
    vjp,
)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


class FlagOutside(nn.Module):
    """A flag (a plain attribute) makes the forward also use ``lin.weight`` outside ``lin``."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        self.flag = False
        self.scale = scale

    def forward(self, x):
        h = torch.tanh(self.lin(x))
        if self.flag:
            h = h + self.scale * x @ self.lin.weight.T
        return self.head(h)


def test_plan_cache_does_not_carry_the_safety_verdict():
    torch.manual_seed(0)
    model = FlagOutside().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    assert rel(empirical_ntk(model, x), reference_ntk(model, x)) < 1e-12
    model.flag = True  # same structure and shapes, different use of lin.weight
    assert rel(empirical_ntk(model, x), reference_ntk(model, x)) < 1e-12
    assert "lin.weight" in explain(model, x).groups[-1].names  # the fallback group
    model.flag = False
    assert rel(empirical_ntk(model, x), reference_ntk(model, x)) < 1e-12


@pytest.mark.parametrize(("dtype", "scale"), [(torch.float32, 1e-4), (torch.float64, 1e-8)])
def test_small_outside_use_is_not_dropped(dtype, scale):
    """Contributions below the old 10 sqrt(eps) tolerance, above the documented accuracy."""
    torch.manual_seed(0)
    model = FlagOutside(scale=scale).double()
    model.flag = True
    x = torch.randn(6, 4, dtype=torch.float64)
    want = reference_ntk(model, x)
    got = empirical_ntk(model.to(dtype), x.to(dtype)).double()
    assert rel(got, want) < (1e-10 if dtype == torch.float64 else 1e-5)
    f = jacobian_factors(model, x.to(dtype))
    assert rel(torch.einsum("iap,jbp->ijab", f.to_dense(), f.to_dense()).double(), want) < (
        1e-10 if dtype == torch.float64 else 1e-5
    )


class TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 8)
        self.out = nn.Linear(8, 2)


class Centered(TwoLayer):
    def forward(self, x):
        h = self.lin(x)
        return self.out(torch.tanh(h - h.mean(0)))


class MyBatchNorm(TwoLayer):
    def forward(self, x):
        h = self.lin(x)
        h = (h - h.mean(0, keepdim=True)) / (h.var(0, keepdim=True, unbiased=False) + 1).sqrt()
        return self.out(h)


class Noisy(TwoLayer):
    def forward(self, x):
        return self.out(F.dropout(torch.tanh(self.lin(x)), 0.5, training=True))


class FixedMasks(TwoLayer):
    """Dropout with masks fixed per example (held in a buffer): deterministic."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mask", (torch.rand(8) > 0.5).double() * 2)

    def forward(self, x):
        return self.out(torch.tanh(self.lin(x)) * self.mask)


@pytest.mark.parametrize("cls", [Centered, MyBatchNorm])
@pytest.mark.parametrize("method", ["auto", "jacobian", "ntvp"])
def test_batch_coupling_is_refused(cls, method):
    x = torch.randn(5, 4, dtype=torch.float64)
    model = cls().double()
    with pytest.raises(BatchCouplingError, match="depends on the other examples"):
        empirical_ntk(model, x, method=method)
    with pytest.raises(BatchCouplingError):
        jacobian_factors(model, x)
    with pytest.raises(BatchCouplingError):
        NTKOperator(model, x, backend="ntvp")
    with pytest.raises(BatchCouplingError):  # one example in x1, the pair taken with x2
        empirical_ntk(model, x[:1], x[1:], method=method)


@pytest.mark.parametrize("method", ["auto", "jacobian", "ntvp"])
def test_random_forward_is_refused(method):
    x = torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(RandomForwardError, match="random"):
        empirical_ntk(Noisy().double(), x, method=method)
    with pytest.raises(RandomForwardError):
        NTKOperator(Noisy().double(), x)


def test_module_level_checks_raise_the_named_errors():
    x = torch.randn(5, 4)
    with pytest.raises(BatchCouplingError, match="BatchNorm1d"):
        empirical_ntk(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), x)
    with pytest.raises(RandomForwardError, match="Dropout"):
        empirical_ntk(nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)), x)


def test_randomness_fixed_per_example_is_accepted():
    torch.manual_seed(0)
    model = FixedMasks().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    want = reference_ntk(model, x)
    for method in ("auto", "jacobian", "ntvp"):
        assert rel(empirical_ntk(model, x, method=method), want) < 1e-12


class TiedPadding(nn.Module):
    """A language-model head tied to an Embedding with a padding row."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 5, padding_idx=0)
        self.mix = nn.Linear(5, 5)
        self.head = nn.Linear(5, 7, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(torch.tanh(self.mix(self.emb(ids)))).mean(1)


def test_ntvp_and_jvp_with_padding_row_tied_to_the_head():
    torch.manual_seed(0)
    model = TiedPadding().double()
    ids = torch.tensor([[0, 1, 2], [3, 0, 0], [4, 5, 6], [0, 6, 1]])
    want = reference_ntk(model, ids)
    for method in ("auto", "jacobian", "ntvp"):
        assert rel(empirical_ntk(model, ids, method=method), want) < 1e-12, method
    dense = want.permute(0, 2, 1, 3).reshape(28, 28)
    V = torch.randn(28, 3, dtype=torch.float64)
    for backend in ("factors", "ntvp"):
        assert rel(NTKOperator(model, ids, backend=backend) @ V, dense @ V) < 1e-12, backend
    # jvp is the transpose of vjp: <J t, u> = <t, J^T u>
    t = {"emb.weight": torch.randn(7, 5, dtype=torch.float64)}
    u = torch.randn(4, 7, dtype=torch.float64)
    _, jt = jvp(model, ids, t)
    g = vjp(model, ids, u, params=["emb.weight"])
    assert abs(float((jt * u).sum() - (t["emb.weight"] * g["emb.weight"]).sum())) < 1e-12 * float(
        jt.norm() * u.norm()
    )


def _mlp(width: int = 16, outputs: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, outputs)).double()


def test_spectrum_trace_is_exact_for_a_small_operator():
    """n = 40 <= trace_matvecs: formed, so trace and participation ratio are exact."""
    torch.manual_seed(0)
    A = torch.randn(40, 40, dtype=torch.float64)
    A = A @ A.T / 40
    s = spectrum(DenseOperator(A, symmetric=True), k=2, trace_matvecs=60, condition=False)
    assert s.trace == pytest.approx(float(A.trace()), rel=1e-13)
    assert s.trace_stderr == 0.0 and s.participation_ratio_stderr == 0.0
    assert s.participation_ratio == pytest.approx(float(A.trace() ** 2 / (A * A).sum()), rel=1e-12)


@pytest.mark.parametrize("backend", ["factors", "ntvp"])
def test_spectrum_trace_is_exact_for_a_model(backend):
    model, x = _mlp(), torch.randn(40, 4, dtype=torch.float64)  # n = 120 > 3 * 6 probes
    K = reference_ntk(model, x).permute(0, 2, 1, 3).reshape(120, 120)
    op = NTKOperator(model, x, backend=backend)
    assert rel(op.diagonal(), K.diagonal()) < 1e-12
    s = spectrum(op, k=2, trace_matvecs=6, condition=False)
    assert s.trace == pytest.approx(float(K.trace()), rel=1e-12)
    assert s.trace_stderr == 0.0
    pr = float(K.trace() ** 2 / (K * K).sum())
    assert 0 < s.participation_ratio_stderr < float("inf")
    assert abs(s.participation_ratio - pr) < 5 * s.participation_ratio_stderr
    st = spectrum(model, x, k=2, output="trace", trace_matvecs=6, condition=False)
    assert st.trace == pytest.approx(float(K.trace()), rel=1e-12) and st.trace_stderr == 0.0


def test_spectrum_estimates_of_a_generic_operator_carry_their_stderr():
    torch.manual_seed(1)
    U = torch.randn(300, 300, dtype=torch.float64)
    A = U @ torch.diag(torch.logspace(0, -3, 300, dtype=torch.float64)) @ U.T / 300
    s = spectrum(DenseOperator(A, symmetric=True), k=1, trace_matvecs=30, condition=False)
    assert 0 < s.trace_stderr < 0.1 * float(A.trace())
    assert abs(s.trace - float(A.trace())) < 5 * s.trace_stderr
    pr = float(A.trace() ** 2 / (A * A).sum())
    assert abs(s.participation_ratio - pr) < 5 * s.participation_ratio_stderr
