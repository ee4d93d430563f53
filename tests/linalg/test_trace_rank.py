"""Hutchinson / Hutch++ trace estimates and effective-rank measures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kernelens.linalg import (
    DenseOperator,
    LinearOperator,
    entropy_effective_rank,
    hutchinson_trace,
    hutchpp_trace,
    participation_ratio,
)

# -- traces ---------------------------------------------------------------------------------


def test_hutchinson_is_exact_on_diagonal_matrices() -> None:
    # Rademacher probes: z^T D z = sum_i d_i z_i^2 = tr(D) for every z
    D = torch.diag(torch.linspace(-2, 5, 50, dtype=torch.float64))
    assert float(hutchinson_trace(D, 3)) == pytest.approx(float(D.trace()), rel=1e-14)


def test_hutchinson_is_unbiased_with_the_predicted_variance(make_spd) -> None:
    A = make_spd(60, cond=10.0)
    m, reps = 8, 300
    est = torch.stack([hutchinson_trace(A, m, seed=s) for s in range(reps)]).numpy()
    # Var = 2 (||A||_F^2 - sum A_ii^2) / m for Rademacher probes
    var = 2 * (float((A**2).sum()) - float((A.diagonal() ** 2).sum())) / m
    se = math.sqrt(var / reps)
    assert abs(est.mean() - float(A.trace())) < 4 * se
    assert est.var() == pytest.approx(var, rel=0.3)


def test_hutchinson_works_for_non_symmetric_operators() -> None:
    g = torch.Generator().manual_seed(0)
    A = torch.randn(40, 40, generator=g, dtype=torch.float64) + 10 * torch.eye(40)
    op = LinearOperator((40, 40), lambda V: A @ V, dtype=A.dtype)
    est = hutchinson_trace(op, 4000, block_size=500)
    assert float(est) == pytest.approx(float(A.trace()), rel=0.02)


def test_hutchpp_is_exact_when_the_sketch_spans_everything(make_spd) -> None:
    A = make_spd(20, torch.linspace(-1, 3, 20, dtype=torch.float64))
    assert float(hutchpp_trace(A, 60)) == pytest.approx(float(A.trace()), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_hutchpp_beats_hutchinson_at_equal_matvecs_on_low_rank(make_low_rank, dtype) -> None:
    # rank 15 plus a small PSD perturbation: Hutch++'s sketch captures the low-rank part,
    # leaving only the perturbation to the random probes.
    A = make_low_rank(400, 15, noise=1e-2, dtype=dtype)
    true = float(A.double().trace())
    m, seeds = 60, 25
    err_h = np.mean([abs(float(hutchinson_trace(A, m, seed=s)) - true) for s in range(seeds)])
    err_pp = np.mean([abs(float(hutchpp_trace(A, m, seed=s)) - true) for s in range(seeds)])
    assert hutchpp_trace(A, m).dtype == dtype
    # typically ~50x smaller here; demand 5x over the 25-seed average
    assert err_pp * 5 < err_h, (err_pp, err_h)
    assert err_pp / true < 1e-2


def test_trace_bad_input() -> None:
    with pytest.raises(ValueError, match="square"):
        hutchinson_trace(torch.randn(4, 3), 2)
    with pytest.raises(ValueError, match=">= 3"):
        hutchpp_trace(torch.eye(4), 2)
    with pytest.raises(ValueError, match=">= 1"):
        hutchinson_trace(torch.eye(4), 0)
    nan_op = LinearOperator((4, 4), lambda V: V * float("nan"), symmetric=True)
    with pytest.raises(ValueError, match="non-finite"):
        hutchinson_trace(nan_op, 3)
    with pytest.raises(ValueError, match="non-finite"):
        hutchpp_trace(nan_op, 3)


# -- effective ranks ------------------------------------------------------------------------


def test_effective_ranks_of_flat_spectra() -> None:
    for r in (1, 3, 10):
        evals = torch.cat([torch.full((r,), 2.5), torch.zeros(7)]).double()
        assert float(participation_ratio(evals)) == pytest.approx(r, rel=1e-12)
        assert float(entropy_effective_rank(evals)) == pytest.approx(r, rel=1e-12)


def test_effective_ranks_of_known_spectra() -> None:
    rho = 0.9
    lam = rho ** torch.arange(2000, dtype=torch.float64)
    # geometric spectrum: PR = (1 + rho) / (1 - rho) (tail beyond 2000 terms is negligible)
    assert float(participation_ratio(lam)) == pytest.approx((1 + rho) / (1 - rho), rel=1e-10)
    # entropy of p_i = (1 - rho) rho^i: H = -log(1 - rho) - rho log(rho) / (1 - rho)
    H = -math.log(1 - rho) - rho * math.log(rho) / (1 - rho)
    assert float(entropy_effective_rank(lam)) == pytest.approx(math.exp(H), rel=1e-10)
    # two levels [a, b]: PR = (a + b)^2 / (a^2 + b^2)
    two = torch.tensor([3.0, 1.0], dtype=torch.float64)
    assert float(participation_ratio(two)) == pytest.approx(16 / 10)
    p = np.array([0.75, 0.25])
    assert float(entropy_effective_rank(two)) == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_participation_ratio_of_matrices_matches_eigenvalues(make_spd) -> None:
    mats = torch.stack([make_spd(30, cond=c) for c in (1.0, 1e2, 1e6)])
    batch = participation_ratio(mats)
    assert batch.shape == (3,)
    for i in range(3):
        ev = torch.linalg.eigvalsh(mats[i])
        assert float(batch[i]) == pytest.approx(float(participation_ratio(ev)), rel=1e-10)
    assert float(batch[0]) == pytest.approx(30.0, rel=1e-10)


def test_entropy_effective_rank_batched_and_scale_free() -> None:
    lam = torch.rand(4, 25, dtype=torch.float64)
    out = entropy_effective_rank(lam)
    assert out.shape == (4,)
    torch.testing.assert_close(entropy_effective_rank(7.0 * lam), out)
    assert bool((out >= 1).all() and (out <= 25).all())


def test_participation_ratio_of_an_operator(make_kernel_matrix) -> None:
    K = make_kernel_matrix(600, d=3, bandwidth=1.0)
    exact = float(participation_ratio(K))
    op = DenseOperator(K, symmetric=True)
    estimates = [float(participation_ratio(op, num_matvecs=60, seed=s)) for s in range(10)]
    # Hutch++ on a fast-decaying kernel spectrum: each estimate within ~5%, the mean closer
    assert np.mean(estimates) == pytest.approx(exact, rel=0.04)
    assert max(abs(e - exact) for e in estimates) < 0.15 * exact
    # small operators are formed densely: exact
    small = DenseOperator(K[:100, :100], symmetric=True)
    assert float(participation_ratio(small, num_matvecs=40)) == pytest.approx(
        float(participation_ratio(K[:100, :100])), rel=1e-12
    )


def test_effective_rank_bad_input() -> None:
    with pytest.raises(ValueError, match="negative"):
        entropy_effective_rank(torch.tensor([1.0, -0.5]))
    # round-off negatives are clamped
    assert float(
        entropy_effective_rank(torch.tensor([1.0, 1.0, -1e-12], dtype=torch.float64))
    ) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="zero"):
        participation_ratio(torch.zeros(3))
    with pytest.raises(ValueError, match="zero"):
        entropy_effective_rank(torch.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        participation_ratio(torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match="square"):
        participation_ratio(torch.ones(3, 4))


def test_hutchpp_stderr_covers_the_error() -> None:
    from kernelens.linalg import hutchpp_trace

    g = torch.Generator().manual_seed(3)
    B = torch.randn(300, 300, generator=g, dtype=torch.float64)
    A = B @ B.T / 300
    exact = float(A.trace())
    z = []
    for seed in range(20):
        est, se = hutchpp_trace(A, 60, seed=seed, return_stderr=True)
        assert float(se) > 0
        assert float(est) == float(hutchpp_trace(A, 60, seed=seed))
        z.append((float(est) - exact) / float(se))
    # standardised errors of an honest standard error: almost all within 3, spread about 1
    assert sum(abs(v) < 3 for v in z) >= 18
    assert 0.4 < float(torch.tensor(z).std()) < 2.5
