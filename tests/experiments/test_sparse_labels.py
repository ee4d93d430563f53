"""Seed 004 headline (readouts vs labels) and ViT backbone: small versions of each piece."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from kernelens.experiments import run_experiment
from kernelens.experiments.sparse.backbones import SmallViT, backbone_features
from kernelens.experiments.sparse.cnn import accuracy
from kernelens.experiments.sparse.labels import (
    READOUTS,
    fit_learned_sk,
    knn_readout,
    label_curve,
    mean_se,
    subset,
)


def test_small_vit_shapes_and_gradients():
    torch.manual_seed(0)
    vit = SmallViT(dim=16, depth=2, heads=2)
    x = torch.randn(5, 1, 28, 28)
    assert vit.trunk(x).shape == (5, 16)
    vit(x).sum().backward()
    assert all(p.grad is not None for p in vit.parameters())
    with pytest.raises(ValueError, match="patch"):
        SmallViT(patch=5)


def test_small_vit_is_per_sample():
    # no batch coupling: a sample's features do not depend on the rest of the batch
    torch.manual_seed(0)
    vit = SmallViT(dim=16, heads=2).eval()
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(vit.trunk(x)[1:2], vit.trunk(x[1:2]), rtol=1e-5, atol=1e-6)


def test_backbone_features_trained_once_and_named_error():
    a = backbone_features("vit", 0, n_train=300, n_test=100, epochs=1)
    assert backbone_features("vit", 0, n_train=300, n_test=100, epochs=1) is a
    assert a.F_train.shape == (300, 64) and a.F_test.shape == (100, 64)
    assert accuracy(a.test_logits, a.y_test) == a.head_accuracy
    with pytest.raises(ValueError, match="name must be one of"):
        backbone_features("resnet", 0, n_train=10, n_test=10)


def test_mean_se_matches_scipy():
    v = [0.7, 0.72, 0.69, 0.75, 0.71]
    mean, se = mean_se(v)
    assert math.isclose(mean, float(np.mean(v)))
    assert math.isclose(se, float(stats.sem(v)))
    assert mean_se([0.5]) == (0.5, 0.0)


def test_subset_distinct_and_seeded():
    a, b = subset(100, 30, 1), subset(100, 30, 2)
    assert len(set(a.tolist())) == 30 and torch.equal(a, subset(100, 30, 1))
    assert not torch.equal(a, b)


def test_knn_readout_matches_brute_force():
    torch.manual_seed(0)
    F, y, Q = torch.randn(60, 3), torch.randint(0, 4, (60,)), torch.randn(25, 3)
    votes = knn_readout(F, y, 4, k=5)(Q)
    for i in range(len(Q)):
        d = ((F - Q[i]) ** 2).sum(1)
        nearest = np.argsort(d.numpy(), kind="stable")[:5]
        expected = np.bincount(y.numpy()[nearest], minlength=4)
        np.testing.assert_array_equal(votes[i].numpy(), expected)


def test_learned_sk_learns_and_moves_all_parameters():
    torch.manual_seed(0)
    y = torch.randint(0, 3, (200,))
    F = torch.randn(200, 2) * 0.3 + torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])[y]
    sk, seconds = fit_learned_sk(F, y, 3, steps=30)
    assert seconds > 0 and sk.n_centers == 100
    assert not torch.equal(sk.centers.detach(), F[:100])
    assert float(sk.bandwidth.detach()) > 0
    assert accuracy(sk(F[100:]).detach(), y[100:]) > 0.9


def test_label_curve_small():
    f = backbone_features("cnn", 0, n_train=400, n_test=100, epochs=1)
    curve = label_curve([f], [50, 200], learned_steps=3)
    assert set(curve) == {(name, m) for name in READOUTS for m in (50, 200)}
    accs = {key: v[0][0] for key, v in curve.items()}
    assert all(0.1 < a <= 1.0 for a in accs.values())
    # different readouts are different predictors (identical numbers would mean a bug)
    assert len({accs[name, 200] for name in READOUTS}) >= 4
    assert curve[READOUTS[0], 200][0][1] < curve["MLP head", 200][0][1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sparse_labels", "sparse_vit"])
def test_registered_quick_runs(name):
    r = run_experiment(name, quick=True)
    assert r.quick and "inconclusive (quick mode)" in r.summary
    assert all(math.isfinite(v) for v in r.metrics.values())
