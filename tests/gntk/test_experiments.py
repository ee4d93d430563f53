"""The global-NTK experiments: quick modes run, register, and report claim / number / verdict."""

from __future__ import annotations

import math

import pytest
import torch

from kernelens.experiments import get_experiment, run_experiment
from kernelens.experiments.gntk._tasks import delayed_copy, flip_flop, verdict

NAMES = [
    "gntk_low_rank",
    "gntk_self_referential_bias",
    "gntk_initialisation",
    "gntk_transformer_rank",
    "gntk_space_time",
]
FAST = {"gntk_transformer_rank", "gntk_space_time"}


def test_all_registered_under_gntk() -> None:
    assert all(get_experiment(n).area == "gntk" for n in NAMES)


def test_flip_flop_target_is_the_last_pulse() -> None:
    x, y = flip_flop(4, 30, channels=2, p=0.2, seed=1)
    for b in range(4):
        for c in range(2):
            last = 0.0
            for t in range(30):
                if x[b, t, c] != 0:
                    last = float(x[b, t, c])
                assert float(y[b, t, c]) == last
    assert set(torch.unique(x).tolist()) <= {-1.0, 0.0, 1.0}


def test_delayed_copy_shifts_the_input() -> None:
    x, y = delayed_copy(3, 10, (0, 2), seed=0)
    torch.testing.assert_close(y[:, :, 0], x[:, :, 0])
    torch.testing.assert_close(y[:, 2:, 1], x[:, :-2, 0])
    assert float(y[:, :2, 1].abs().max()) == 0.0


def test_verdict_words() -> None:
    assert verdict(True, quick=False) == "reproduced"
    assert verdict(False, quick=False) == "not reproduced"
    assert verdict(True, quick=True).startswith("inconclusive")


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in NAMES]
)
def test_quick_mode(name: str) -> None:
    result = run_experiment(name, quick=True)
    assert result.tables[0].rows and result.figures
    for key in ("**Claim**", "**Ours**", "**Verdict**: inconclusive"):
        assert key in result.summary
    assert all(math.isfinite(v) for v in result.metrics.values())
    (claim,) = result.claims
    assert claim.verdict == "inconclusive" and claim.claim and claim.ours in result.summary
