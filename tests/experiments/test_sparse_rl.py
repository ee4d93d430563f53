"""Seed 004, RL: center tracking of the SK Q-head and the lazy gymnasium import."""

from __future__ import annotations

import math

import pytest

from kernelens.experiments.sparse import rl
from kernelens.experiments.sparse.rl import DQNConfig, run_dqn


def test_center_gaps_recorded_for_sk_head_only():
    cfg = DQNConfig(
        steps=260,
        warmup=150,
        sync_every=100,
        eps_decay_steps=200,
        eval_episodes=1,
        n_centers=16,
        k=4,
        train_every=4,
    )
    sk, mlp = run_dqn("sk", 0, cfg), run_dqn("mlp", 0, cfg)
    assert sk.center_gap_initial >= 0 and sk.center_gap_final >= 0
    # 28 updates moved the learned centers, so the two distances differ
    assert sk.center_gap_initial != sk.center_gap_final
    assert math.isnan(mlp.center_gap_initial) and math.isnan(mlp.center_gap_final)


def test_missing_gymnasium_names_the_extra(monkeypatch):
    def fail(name):
        raise ImportError(name)

    monkeypatch.setattr(rl.importlib, "import_module", fail)
    with pytest.raises(ImportError, match=r"kernelens\[experiments\]"):
        run_dqn("mlp", 0, DQNConfig(steps=10))
