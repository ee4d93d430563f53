"""Engine primitives (jacobian_factors, contract, dense_dot, Factors, jvp, vjp) against
explicit float64 Jacobians from autograd loops."""

from __future__ import annotations

import copy

import pytest
import torch
from ntk_models import make, reference_jacobian

from kernelens.ntk import Factors, contract, dense_dot, jacobian_factors, jvp, vjp

RTOL = 1e-10
CASES = ["mlp_gelu", "cnn", "transformer", "transformer_seqfirst", "gru", "tied"]


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def perturbed(model, scale=0.1, seed=5):
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return other


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("method", ["auto", "structured", "jacobian"])
def test_to_dense_is_the_jacobian(name, method):
    model, x1, _ = make(name)
    f = jacobian_factors(model, x1, method=method)
    J = reference_jacobian(model, x1)
    assert isinstance(f, Factors)
    assert (f.n, f.r, f.num_params) == tuple(J.shape)
    assert rel_err(f.to_dense(), J) < RTOL
    assert torch.allclose(f.outputs, model(x1).reshape(x1.shape[0], -1).detach())
    dense = f.to_dense_dict()
    for name_, sl in f.param_slices.items():
        assert dense[name_].shape == (f.n, f.r, *f.shapes[name_])
        assert torch.equal(dense[name_].reshape(f.n, f.r, -1), f.to_dense()[:, :, sl])


@pytest.mark.parametrize("name", CASES)
def test_cotangents_contract_outputs(name):
    model, x1, _ = make(name)
    J = reference_jacobian(model, x1)
    n, o, _ = J.shape
    g = torch.Generator().manual_seed(1)
    c = torch.randn(n, o, generator=g, dtype=torch.float64)
    f1 = jacobian_factors(model, x1, cotangents=c)
    assert f1.r == 1
    assert rel_err(f1.to_dense()[:, 0], torch.einsum("ia,iap->ip", c, J)) < RTOL
    c3 = torch.randn(n, o, 3, generator=g, dtype=torch.float64)
    f3 = jacobian_factors(model, x1, cotangents=c3)
    assert rel_err(f3.to_dense(), torch.einsum("iar,iap->irp", c3, J)) < RTOL


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("output", ["full", "diagonal", "trace"])
def test_contract_across_weight_states(name, output):
    model, x1, x2 = make(name)
    other = perturbed(model)
    params = [n for n, _ in model.named_parameters()]
    f1 = jacobian_factors(model, x1, weights=dict(other.named_parameters()), params=params)
    f2 = jacobian_factors(model, x2)
    J1, J2 = reference_jacobian(other, x1), reference_jacobian(model, x2)
    full = torch.einsum("iap,jbp->iajb", J1, J2)
    ref = {
        "full": full,
        "diagonal": torch.einsum("iaja->ija", full),
        "trace": torch.einsum("iaja->ij", full),
    }[output]
    assert rel_err(contract(f1, f2, output=output), ref) < RTOL


def test_contract_mixed_forms_and_methods():
    model, x1, x2 = make("cnn")
    fs = jacobian_factors(model, x1, method="structured")
    fj = jacobian_factors(model, x2, method="jacobian")
    J1, J2 = reference_jacobian(model, x1), reference_jacobian(model, x2)
    assert rel_err(contract(fs, fj), torch.einsum("iap,jbp->iajb", J1, J2)) < RTOL


@pytest.mark.parametrize("name", CASES)
def test_dense_dot_flat_and_dict(name):
    model, x1, _ = make(name)
    f = jacobian_factors(model, x1)
    J = reference_jacobian(model, x1)
    g = torch.Generator().manual_seed(2)
    G = torch.randn(4, f.num_params, generator=g, dtype=torch.float64)
    ref = torch.einsum("mp,nrp->mnr", G, J)
    assert rel_err(dense_dot(G, f), ref) < RTOL
    as_dict = {n: G[:, sl].reshape(4, *f.shapes[n]) for n, sl in f.param_slices.items()}
    assert rel_err(dense_dot(as_dict, f), ref) < RTOL
    first = f.names[0]
    partial = dense_dot({first: as_dict[first]}, f)
    sl = f.param_slices[first]
    assert rel_err(partial, torch.einsum("mp,nrp->mnr", G[:, sl], J[:, :, sl])) < RTOL


@pytest.mark.parametrize("name", ["transformer", "cnn", "tied"])
def test_scale_scalars_keep_structure_and_elementwise_densifies(name):
    model, x1, x2 = make(name)
    f1 = jacobian_factors(model, x1)
    f2 = jacobian_factors(model, x2)
    n_sites = len(f1.sites)
    g = torch.Generator().manual_seed(3)
    scales: dict[str, float | torch.Tensor] = {}
    for k, name_ in enumerate(f1.names):
        if k % 3 == 0:
            scales[name_] = 0.5 + k
        elif k % 3 == 1:
            scales[name_] = torch.tensor(1.5 - 0.1 * k, dtype=torch.float64)
    f1.scale_(scales)
    assert len(f1.sites) == n_sites
    diag = torch.ones(f1.num_params, dtype=torch.float64)
    for name_, s in scales.items():
        diag[f1.param_slices[name_]] = float(s)
    J1, J2 = reference_jacobian(model, x1), reference_jacobian(model, x2)
    ref = torch.einsum("iap,p,jbp->iajb", J1, diag, J2)
    assert rel_err(contract(f1, f2), ref) < RTOL
    # elementwise (e.g. Adam's D) on one layer
    target = f1.names[0]
    d = torch.rand(f1.shapes[target], generator=g, dtype=torch.float64)
    f1.scale_({target: d})
    diag[f1.param_slices[target]] *= d.reshape(-1)
    ref = torch.einsum("iap,p,jbp->iajb", J1, diag, J2)
    assert rel_err(contract(f1, f2), ref) < RTOL
    assert rel_err(f1.to_dense(), J1 * diag) < RTOL


def test_rows_selects_examples():
    model, x1, _ = make("transformer")
    f = jacobian_factors(model, x1)
    sub = f.rows(slice(1, 3))
    assert sub.n == 2
    assert torch.equal(sub.to_dense(), f.to_dense()[1:3])
    idx = torch.tensor([2, 0])
    assert torch.equal(f.rows(idx).to_dense(), f.to_dense()[idx])


@pytest.mark.parametrize("name", ["mlp_tanh", "transformer", "lstm"])
def test_vjp_and_jvp(name):
    model, x1, _ = make(name)
    J = reference_jacobian(model, x1)
    n, o, _ = J.shape
    g = torch.Generator().manual_seed(4)
    c = torch.randn(n, o, generator=g, dtype=torch.float64)
    out = vjp(model, x1, c)
    flat = torch.cat([out[k].reshape(-1) for k, _ in model.named_parameters()])
    assert rel_err(flat, torch.einsum("ia,iap->p", c, J)) < RTOL
    ck = torch.randn(n, o, 2, generator=g, dtype=torch.float64)
    outk = vjp(model, x1, ck)
    flatk = torch.cat([outk[k].reshape(2, -1) for k, _ in model.named_parameters()], 1)
    assert rel_err(flatk, torch.einsum("iak,iap->kp", ck, J)) < RTOL
    t = {
        k: torch.randn(v.shape, generator=g, dtype=torch.float64)
        for k, v in model.named_parameters()
    }
    y, jv = jvp(model, x1, t)
    tflat = torch.cat([t[k].reshape(-1) for k, _ in model.named_parameters()])
    assert rel_err(jv, torch.einsum("iap,p->ia", J, tflat)) < RTOL
    assert torch.allclose(y, model(x1).reshape(n, -1).detach())
