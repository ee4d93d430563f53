"""NTKOperator and spectrum against the dense NTK and numpy/torch eigendecompositions."""

from __future__ import annotations

import pytest
import torch
from ntk_models import make

from kernelens.linalg import DenseOperator
from kernelens.ntk import NTKOperator, empirical_ntk, spectrum


def dense_full(model, x):
    K = empirical_ntk(model, x)
    n, _, o, _ = K.shape
    return K.permute(0, 2, 1, 3).reshape(n * o, n * o)


@pytest.mark.parametrize("name", ["mlp_tanh", "transformer", "gru", "tied"])
@pytest.mark.parametrize("backend", ["factors", "ntvp"])
def test_operator_matches_dense(name, backend):
    model, x1, _ = make(name)
    Kf = dense_full(model, x1)
    Kt = torch.einsum("ijaa->ij", empirical_ntk(model, x1))
    op = NTKOperator(model, x1, backend=backend)
    assert op.backend == backend
    assert op.symmetric and op.shape == Kf.shape
    g = torch.Generator().manual_seed(0)
    V = torch.randn(Kf.shape[0], 3, generator=g, dtype=torch.float64)
    assert torch.allclose(op @ V, Kf @ V, rtol=1e-10, atol=1e-10 * Kf.abs().max().item())
    opt = NTKOperator(model, x1, output="trace", backend=backend)
    V = torch.randn(Kt.shape[0], 2, generator=g, dtype=torch.float64)
    assert torch.allclose(opt @ V, Kt @ V, rtol=1e-10, atol=1e-10 * Kt.abs().max().item())


def test_operator_tiles_columns_under_a_tiny_budget():
    model, x1, _ = make("mlp_gelu")
    Kf = dense_full(model, x1)
    op = NTKOperator(model, x1, backend="ntvp", memory_budget=1)
    V = torch.eye(Kf.shape[0], dtype=torch.float64)
    assert torch.allclose(op @ V, Kf, rtol=1e-10, atol=1e-12)


def test_operator_params_and_weights():
    model, x1, _ = make("residual")
    op = NTKOperator(model, x1, params=["fc.weight"], output="trace")
    ref = empirical_ntk(model, x1, params=["fc.weight"], output="trace")
    assert torch.allclose(op.to_dense(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["mlp_tanh", "cnn", "lstm"])
def test_spectrum_matches_eigh(name):
    model, x1, _ = make(name)
    Kf = dense_full(model, x1)
    evals = torch.linalg.eigvalsh(Kf).flip(0)
    s = spectrum(model, x1, k=3, trace_matvecs=3 * Kf.shape[0])
    assert torch.allclose(s.eigenvalues, evals[:3], rtol=1e-8)
    resid = Kf @ s.eigenvectors - s.eigenvectors * s.eigenvalues
    assert resid.abs().max() < 1e-6 * evals[0]
    assert s.trace == pytest.approx(float(Kf.trace()), rel=1e-8)
    pr = float(Kf.trace() ** 2 / (Kf**2).sum())
    assert s.participation_ratio == pytest.approx(pr, rel=1e-6)
    assert 1.0 <= s.entropy_rank_topk <= 3.0
    assert s.lambda_min == pytest.approx(float(evals[-1]), abs=1e-6 * float(evals[0]))


def test_spectrum_of_an_operator_and_trace_output():
    model, x1, _ = make("transformer")
    Kt = torch.einsum("ijaa->ij", empirical_ntk(model, x1))
    s = spectrum(DenseOperator(Kt, symmetric=True), k=2, condition=False)
    assert torch.allclose(s.eigenvalues, torch.linalg.eigvalsh(Kt).flip(0)[:2], rtol=1e-8)
    s2 = spectrum(model, x1, k=2, output="trace", condition=False)
    assert torch.allclose(s2.eigenvalues, s.eigenvalues, rtol=1e-8)


def test_spectrum_bad_arguments():
    model, x1, _ = make("mlp_tanh")
    with pytest.raises(ValueError, match="x is required"):
        spectrum(model)
    with pytest.raises(ValueError, match="exceeds the operator size"):
        spectrum(model, x1, k=1000)
