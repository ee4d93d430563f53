"""Spectrum, trace, effective rank, partial traces and alignment against dense references."""

from __future__ import annotations

import torch
from torch import nn

from kernelens.gntk import alignment, global_ntk


def _G(B: int = 6, T: int = 8, H: int = 4):
    torch.manual_seed(0)
    rnn = nn.GRU(2, H, batch_first=True).double()
    return global_ntk(rnn, torch.randn(B, T, 2, dtype=torch.float64))


def test_spectrum_matches_dense_eigh() -> None:
    G = _G()
    N = G.ntk.to_dense()
    evals, evecs = G.spectrum(5)
    ref = torch.linalg.eigvalsh(N).flip(0)[:5]
    torch.testing.assert_close(evals, ref, rtol=1e-8, atol=0)
    torch.testing.assert_close(N @ evecs, evecs * evals, rtol=0, atol=1e-6 * float(ref[0]))


def test_trace_and_effective_rank() -> None:
    G = _G()
    N = G.ntk.to_dense()
    exact_pr = float(N.trace() ** 2 / (N * N).sum())
    assert abs(float(G.effective_rank(num_matvecs=99)) - exact_pr) < 1e-9 * exact_pr  # dense
    est = float(G.effective_rank(num_matvecs=45, seed=1))  # 3 m < S = 192: Hutch++
    assert abs(est - exact_pr) < 0.15 * exact_pr
    assert abs(float(G.trace(num_matvecs=300)) - float(N.trace())) < 1e-10 * float(N.trace())
    assert abs(float(G.trace(num_matvecs=60, seed=2)) - float(N.trace())) < 0.05 * float(N.trace())


def test_partial_traces_match_dense() -> None:
    B, T, H = 3, 5, 2
    G = _G(B, T, H)
    N = G.ntk.to_dense().reshape(B, T, H, B, T, H)
    over_time = torch.einsum("bthcts->bhcs", N).reshape(B * H, B * H)
    over_examples = torch.einsum("bthbus->thus", N).reshape(T * H, T * H)
    torch.testing.assert_close(G.partial_trace("time").to_dense(), over_time, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        G.partial_trace("examples").to_dense(), over_examples, rtol=1e-12, atol=0
    )


def test_alignment_dense_and_estimated() -> None:
    G = _G()
    N, K = G.ntk.to_dense(), G.K.to_dense()
    exact = float((N * K).sum() / (N.norm() * K.norm()))
    assert abs(float(alignment(N, K)) - exact) < 1e-12
    assert abs(float(alignment(G.ntk, G.K, num_matvecs=99)) - exact) < 1e-10  # 3 m >= S: dense
    est = float(alignment(G.ntk, G.K, num_matvecs=45, seed=0))
    assert abs(est - exact) < 0.1
    assert abs(float(alignment(N, 3 * N)) - 1) < 1e-12


def test_kronecker_core_ranks() -> None:
    G = _G()
    core = G.kronecker_core()
    assert set(core) == {"l0.rz", "l0.n_x", "l0.n_h"}
    for Z, rank in core.values():
        assert Z.shape[0] == 6 * 8
        assert rank == int(torch.linalg.matrix_rank(Z))
    assert core["l0.rz"][0].shape[1] == 2 + 4 + 2


def test_site_gram_operator() -> None:
    G = _G()
    Z, _ = G.kronecker_core()["l0.n_h"]
    gram = G.site_gram("l0.n_h")
    assert gram.symmetric and gram.shape == (48, 48)
    torch.testing.assert_close(gram.to_dense(), Z @ Z.T)
