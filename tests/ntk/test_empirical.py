"""empirical_ntk against an independent dense float64 reference (autograd loops)."""

from __future__ import annotations

import copy

import pytest
import torch
from ntk_models import (
    ARCHITECTURES,
    MLP,
    cached_reference,
    make,
    reference_jacobian,
    reference_ntk,
)
from torch import nn

from kernelens import empirical_ntk
from kernelens.ntk import explain

METHODS = ["structured", "jacobian", "ntvp", "auto"]
RTOL = 1e-10  # float64: all methods agree with the reference to round-off


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("method", METHODS)
def test_full_ntk_matches_reference(name, method):
    model, x1, x2 = make(name)
    ref = cached_reference(name)
    got = empirical_ntk(model, x1, x2, method=method)
    assert got.shape == ref.shape
    assert got.dtype == torch.float64
    assert rel_err(got, ref) < RTOL


@pytest.mark.parametrize("name", ["mlp_gelu", "cnn", "transformer", "gru"])
@pytest.mark.parametrize("output", ["trace", "diagonal"])
@pytest.mark.parametrize("method", METHODS)
def test_output_modes(name, output, method):
    model, x1, x2 = make(name)
    ref = cached_reference(name, output)
    got = empirical_ntk(model, x1, x2, method=method, output=output)
    assert got.shape == ref.shape
    assert rel_err(got, ref) < RTOL


@pytest.mark.parametrize("name", ["mlp_tanh", "transformer", "lstm"])
@pytest.mark.parametrize("output", ["full", "trace", "diagonal"])
def test_x2_none_equals_x2_x1_and_is_symmetric(name, output):
    model, x1, _ = make(name)
    a = empirical_ntk(model, x1, output=output)
    b = empirical_ntk(model, x1, x1, output=output)
    assert rel_err(a, b) < RTOL
    if output == "full":
        assert torch.allclose(a, a.permute(1, 0, 3, 2), rtol=0, atol=1e-12)
    else:
        assert torch.allclose(a, a.transpose(0, 1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_frozen_parameters_are_excluded(method):
    model, x1, x2 = make("residual")
    model.fc.weight.requires_grad_(False)
    model.norm.bias.requires_grad_(False)
    ref = reference_ntk(model, x1, x2)
    assert rel_err(empirical_ntk(model, x1, x2, method=method), ref) < RTOL


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("mlp_relu", ["0.bias"]),
        ("mlp_relu", ["2.weight", "4.bias"]),
        ("transformer", ["attn.in_proj_bias"]),
        ("transformer", ["attn.in_proj_weight", "emb.weight", "pos"]),
        ("transformer", ["attn.out_proj.bias", "ln1.weight"]),
        ("gru", ["rnn.weight_hh_l0", "head.bias"]),
        ("cnn", ["c2.weight", "bn.bias"]),
    ],
)
@pytest.mark.parametrize("method", METHODS)
def test_params_subsets(name, params, method):
    model, x1, x2 = make(name)
    ref = cached_reference(name, "full", tuple(params))
    got = empirical_ntk(model, x1, x2, method=method, params=params)
    assert rel_err(got, ref) < RTOL


def test_params_accepts_parameter_objects():
    model, x1, x2 = make("mlp_tanh")
    by_obj = empirical_ntk(model, x1, x2, params=[model[4].weight, model[0].bias])
    by_name = empirical_ntk(model, x1, x2, params=["4.weight", "0.bias"])
    assert torch.equal(by_obj, by_name)


@pytest.mark.parametrize("method", METHODS)
def test_weights_mapping_evaluates_elsewhere_without_mutation(method):
    model, x1, x2 = make("transformer")
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1 * torch.randn_like(p))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    weights = dict(other.named_parameters())
    got = empirical_ntk(model, x1, x2, method=method, weights=weights)
    assert rel_err(got, reference_ntk(other, x1, x2)) < RTOL
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


def test_partial_weights_mapping():
    model, x1, x2 = make("mlp_tanh")
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[2].weight.mul_(1.7)
    got = empirical_ntk(model, x1, x2, weights={"2.weight": other[2].weight})
    assert rel_err(got, reference_ntk(other, x1, x2)) < RTOL


@pytest.mark.parametrize("method", METHODS)
def test_model_state_and_grads_untouched(method):
    model, x1, x2 = make("cnn")
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    hooks = sum(len(m._forward_hooks) for m in model.modules())
    empirical_ntk(model, x1, x2, method=method)
    assert not model.training
    assert all(not m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(model.fc.weight.grad, torch.ones_like(model.fc.weight))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc.weight")
    assert flags == [p.requires_grad for p in model.parameters()]
    assert hooks == sum(len(m._forward_hooks) for m in model.modules())


def test_training_flag_is_respected_and_kept():
    model = MLP().double().train()
    x = torch.randn(3, 5, dtype=torch.float64)
    empirical_ntk(model, x)
    assert model.training


def test_float32_agrees_with_float64():
    model, x1, x2 = make("transformer")
    ref = empirical_ntk(model, x1, x2)
    got = empirical_ntk(model.float(), x1, x2)
    assert got.dtype == torch.float32
    assert rel_err(got.double(), ref) < 1e-4


@pytest.mark.parametrize("output", ["full", "trace"])
def test_memory_budget_tiles_give_same_result(output):
    torch.manual_seed(3)
    model = MLP(d_in=20, width=64, d_out=3).double()
    x = torch.randn(120, 20, dtype=torch.float64)
    x2 = torch.randn(40, 20, dtype=torch.float64)
    big = empirical_ntk(model, x, x2, output=output)
    small = empirical_ntk(model, x, x2, output=output, memory_budget=1)
    assert rel_err(small, big) < 1e-12
    sym_big = empirical_ntk(model, x, output=output)
    sym_small = empirical_ntk(model, x, output=output, memory_budget=1)
    assert rel_err(sym_small, sym_big) < 1e-12


def test_output_shapes_scalar_and_higher_rank():
    torch.manual_seed(0)
    lin = nn.Linear(4, 6).double()
    x = torch.randn(3, 4, dtype=torch.float64)

    class Scalar(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x).sum(1)

    class Matrix(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x).reshape(-1, 2, 3)

    k = empirical_ntk(Scalar(), x)
    assert k.shape == (3, 3, 1, 1)
    assert rel_err(k, reference_ntk(Scalar(), x)) < RTOL
    k = empirical_ntk(Matrix(), x)
    assert k.shape == (3, 3, 6, 6)
    J = reference_jacobian(lin, x)
    assert rel_err(k, torch.einsum("iap,jbp->ijab", J, J)) < RTOL


def test_explain_reports_every_group():
    model, x1, x2 = make("transformer")
    plan = explain(model, x1, x2)
    text = str(plan)
    for part in ("emb", "attn", "ln1", "head", "<not covered>", "structured", "GFLOP"):
        assert part in text
    covered = {n for g in plan.groups for n in g.names}
    assert covered == {n for n, _ in model.named_parameters()}
    assert plan.total_flops > 0
    for g in plan.groups:
        if g.method == "structured" and g.alternatives:  # auto picks the cheaper form
            assert g.flops == pytest.approx(min(g.alternatives.values()))
    assert "explicit: per-example block" in text
    tied = explain(*make("tied")[:2])
    assert {g.form for g in tied.groups if "(tied)" in g.kind} == {"explicit"}
    assert {g.module for g in tied.groups if "(tied)" in g.kind} == {"emb", "dec"}
    plan = explain(model, x1, method="jacobian")
    assert [g.method for g in plan.groups] == ["jacobian"]


def test_weights_may_override_buffers():
    model, x1, x2 = make("cnn")
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.bn.running_mean.add_(0.3)
        other.bn.running_var.mul_(1.5)
    weights = {"bn.running_mean": other.bn.running_mean, "bn.running_var": other.bn.running_var}
    for method in METHODS:
        got = empirical_ntk(model, x1, x2, method=method, weights=weights)
        assert rel_err(got, reference_ntk(other, x1, x2)) < RTOL
