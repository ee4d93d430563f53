"""Randomized eigh (Halko-Martinsson-Tropp) against dense eigh."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernelens.linalg import LinearOperator, randomized_eigh


def _top(A: torch.Tensor, k: int) -> np.ndarray:
    return np.linalg.eigvalsh(A.double().numpy())[::-1][:k].copy()


def test_exact_for_an_exactly_low_rank_matrix() -> None:
    g = torch.Generator().manual_seed(3)
    G = torch.randn(200, 6, generator=g, dtype=torch.float64)
    A = G @ G.T
    evals, evecs = randomized_eigh(A, 6, power_iters=0)
    np.testing.assert_allclose(evals.numpy(), _top(A, 6), rtol=1e-10)
    # U diag(l) U^T reproduces A
    torch.testing.assert_close(
        evecs * evals @ evecs.T, A, rtol=0, atol=1e-10 * float(A.abs().max())
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_decaying_spectrum_accuracy_and_power_iterations(make_spd, dtype: torch.dtype) -> None:
    n, k = 300, 5
    lam = 0.8 ** torch.arange(n, dtype=torch.float64)
    A = make_spd(n, lam, dtype=dtype)
    ref = lam[:k].numpy()
    errs = []
    for q in (0, 1, 3):
        evals, evecs = randomized_eigh(A, k, oversample=10, power_iters=q, seed=1)
        assert evals.dtype == dtype and evecs.shape == (n, k)
        errs.append(np.abs(evals.double().numpy() - ref).max())
    # HMT: the error factor is about (l_{k+p+1} / l_k)^(2q+1) = 0.8^11 ~ 0.09 per 2 powers
    assert errs[2] < errs[0]
    floor = 1e-5 if dtype == torch.float32 else 1e-12
    assert errs[2] < max(1e-6, floor)
    assert errs[0] < 0.05


def test_low_rank_plus_noise_top_vectors(make_low_rank) -> None:
    A = make_low_rank(250, 8, noise=1e-4)
    evals, evecs = randomized_eigh(A, 8, power_iters=2)
    ref_vals, ref_vecs = np.linalg.eigh(A.numpy())
    ref_vals, ref_vecs = ref_vals[::-1][:8], ref_vecs[:, ::-1][:, :8]
    np.testing.assert_allclose(evals.numpy(), ref_vals, rtol=1e-6)
    # the spanned subspaces agree: singular values of U^T U_ref are all ~1
    s = np.linalg.svd(evecs.numpy().T @ ref_vecs, compute_uv=False)
    np.testing.assert_allclose(s, 1.0, atol=1e-6)


def test_sketch_wider_than_n_is_exact_and_matrix_free_works(make_spd) -> None:
    A = make_spd(12, torch.linspace(-1, 2, 12, dtype=torch.float64))
    op = LinearOperator((12, 12), lambda V: A @ V, dtype=A.dtype, symmetric=True)
    evals, _ = randomized_eigh(op, 4, oversample=20)
    np.testing.assert_allclose(evals.numpy(), _top(A, 4), atol=1e-12)


def test_seed_reproducibility_and_bad_input(make_spd) -> None:
    A = make_spd(40)
    e1, _ = randomized_eigh(A, 3, seed=7, power_iters=0)
    e2, _ = randomized_eigh(A, 3, seed=torch.Generator().manual_seed(7), power_iters=0)
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)
    with pytest.raises(ValueError, match="exceeds"):
        randomized_eigh(A, 41)
    with pytest.raises(ValueError, match="power_iters"):
        randomized_eigh(A, 3, power_iters=-1)
    with pytest.raises(TypeError, match="seed"):
        randomized_eigh(A, 3, seed="zero")
