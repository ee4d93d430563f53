"""Sparse Kernel experiments: small versions of each (the registered quick runs are slow)."""

from __future__ import annotations

import math

import pytest
import torch

from kernelens.experiments import run_experiment
from kernelens.experiments.sparse.cnn import batched, one_hot, trained_cnn
from kernelens.experiments.sparse.fashion_mnist import (
    approximation_gap,
    augment_gain,
    probe_layers,
    readout_curve,
)
from kernelens.experiments.sparse.rl import DQNConfig, SKQNet, _start_learning, _update, run_dqn


def test_readout_curve_small():
    rows, metrics = readout_curve(True, [100, 500])
    assert len(rows) == 8
    # every readout is far above chance (0.1) on the CNN's features
    assert all(r[2] > 0.5 for r in rows)
    # the SK readout is training-free and close to exact KRR with the same kernel
    assert metrics["SK readout acc m=500"] > metrics["exact KRR acc m=500"] - 0.05
    assert next(r for r in rows if r[1].startswith("SK"))[4] == "0"


def test_probe_layers_small():
    rows, metrics = probe_layers(True, 300)
    assert [r[0] for r in rows] == ["input", "block1", "block2", "fc", "logits"]
    assert [r[1] for r in rows] == [784, 1568, 784, 64, 10]
    assert all(0.5 < metrics[f"{r[0]} SK"] <= 1.0 for r in rows)


def test_approximation_gap_vanishes_at_k_equals_n():
    cnn = trained_cnn(True)
    F = batched(cnn.model.trunk, cnn.split.X_train[:300])
    Q = batched(cnn.model.trunk, cnn.split.X_test[:50])
    Y = one_hot(cnn.split.y_train[:300], 10, torch.float64)
    rows = approximation_gap(F, Y, Q, [1, 16, 300], [3.0])
    gaps = {r[1]: r[2] for r in rows}
    assert gaps[300] < 1e-8  # k = n is exact KRR (float64)
    assert gaps[1] > gaps[16] > gaps[300]
    assert rows[-1][3] == 1.0


def test_augment_gain_small():
    res = augment_gain(True, epochs=1, n_memory=200, k=8, n_finetune=1000)
    for key in ("original", "fine-tuned", "fine-tuned + SK branch"):
        assert 0.5 < res[key] <= 1.0
    assert math.isclose(res["gain"], res["fine-tuned + SK branch"] - res["fine-tuned"])
    # the cached trained CNN is not modified by fine-tuning copies of it
    assert trained_cnn(True).test_accuracy == res["original"]


def test_sk_q_head_learns_all_three_parameter_sets():
    cfg = DQNConfig(warmup=100, batch_size=16, n_centers=20, k=4)
    torch.manual_seed(0)
    S = torch.randn(100, 4)
    net, target, opt = _start_learning("sk", S, cfg, seed=0)
    assert isinstance(net, SKQNet)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    buffers = (
        S,
        torch.randint(0, 2, (100,)),
        torch.ones(100),
        torch.randn(100, 4),
        torch.zeros(100),
    )
    import numpy as np

    rng = np.random.default_rng(0)
    _update(net, target, opt, buffers, 100, rng, cfg)
    # targets start at 0, so the output (and every other gradient) is 0 until they move
    assert {n for n, p in net.named_parameters() if not torch.equal(p, before[n])} == {"sk.targets"}
    _update(net, target, opt, buffers, 100, rng, cfg)
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert {"sk.centers", "sk.targets", "sk.log_bandwidth", "trunk.0.weight"} <= changed


@pytest.mark.parametrize("head", ["mlp", "sk"])
def test_run_dqn_tiny(head):
    cfg = DQNConfig(
        steps=300,
        warmup=150,
        sync_every=100,
        eps_decay_steps=200,
        eval_episodes=2,
        n_centers=32,
        k=8,
    )
    run = run_dqn(head, 0, cfg)
    assert run.episode_returns and sum(run.episode_returns) <= cfg.steps
    assert run.episode_end_steps == sorted(run.episode_end_steps)
    assert 8 <= run.eval_return <= 500  # CartPole episodes last at least ~8 steps


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["sparse_readout", "sparse_probing", "sparse_augment", "sparse_approximation", "sparse_dqn"],
)
def test_registered_quick_runs(name):
    r = run_experiment(name, quick=True)
    assert r.quick and r.tables and r.summary
    assert all(math.isfinite(v) for v in r.metrics.values())
