"""Seed 004, augmenting a trained CNN: SK vs equal-capacity branches (small versions)."""

from __future__ import annotations

import math

import pytest
import torch

from kernelens.experiments import run_experiment
from kernelens.experiments.sparse.augment import (
    BRANCHES,
    KNNMemoryBranch,
    MLPBranch,
    SKBranch,
    augment_runs,
)
from kernelens.experiments.sparse.cnn import SmallCNN


def _n_params(module):
    cnn_ids = {id(p) for p in module.trunk.cnn.parameters()} if hasattr(module, "trunk") else set()
    if isinstance(module, SKBranch):
        cnn_ids = {id(p) for p in module.sk.features.cnn.parameters()}
    return sum(p.numel() for p in module.parameters() if id(p) not in cnn_ids)


def test_branches_have_equal_capacity_and_start_points():
    torch.manual_seed(0)
    cnn = SmallCNN()
    mem, lab = torch.randn(50, 1, 28, 28), torch.randint(0, 10, (50,))
    sk, knn, mlp = (
        SKBranch(cnn, mem, lab, 8),
        KNNMemoryBranch(cnn, mem, lab, 8),
        MLPBranch(cnn, 501),
    )
    assert _n_params(sk) == _n_params(knn) == 50 * 10 + 1
    assert abs(_n_params(mlp) - 501) < 75  # nearest hidden width
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(mlp(x), torch.zeros(3, 10))  # the MLP branch starts at zero


def test_knn_memory_branch_matches_explicit_weighted_vote():
    torch.manual_seed(0)
    cnn = SmallCNN().eval()
    mem, lab = torch.randn(30, 1, 28, 28), torch.randint(0, 10, (30,))
    br = KNNMemoryBranch(cnn, mem, lab, 4)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        out = br(x)
        fq, fm, bw = cnn.trunk(x), cnn.trunk(mem), br.log_bandwidth.exp()
        for i in range(2):
            d2 = ((fm - fq[i]) ** 2).sum(1).double()
            near = torch.argsort(d2)[:4]
            w = torch.exp(-(d2[near] - d2[near].min()) / (2 * bw.double() ** 2))
            expected = (w[:, None] * br.targets[near].double()).sum(0) / w.sum()
            torch.testing.assert_close(out[i].double(), expected, rtol=1e-4, atol=1e-5)


def test_augment_runs_small():
    runs = augment_runs(
        [0], n_backbone=300, n_new=200, n_test=100, n_memory=40, epochs=1, backbone_epochs=1, k=4
    )
    assert set(runs) == {"original", *BRANCHES}
    accs = {v: r[0]["acc"] for v, r in runs.items()}
    assert all(0.05 < a <= 1.0 for a in accs.values())
    assert runs["SK"][0]["params"] == runs["k-NN memory"][0]["params"] == 401
    assert runs["none"][0]["params"] == 0


@pytest.mark.slow
def test_registered_quick_run():
    r = run_experiment("sparse_augment", quick=True)
    assert r.quick and "inconclusive (quick mode)" in r.summary
    assert all(math.isfinite(v) for v in r.metrics.values())
