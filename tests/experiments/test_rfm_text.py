"""The decisive text experiment: its metrics and a quick run in which RFM really learns."""

from __future__ import annotations

import numpy as np
import pytest

from kernelens.experiments import run_experiment
from kernelens.experiments.rfm.text import generate
from kernelens.experiments.rfm.textmetrics import bootstrap, corpus_metric, real_word_rate


def test_real_word_rate_and_metrics():
    # complete words only: "zzq" counts, the cut last word does not
    assert real_word_rate(["the zzq and ca"], {"the", "and"}) == pytest.approx(2 / 3)
    assert corpus_metric("chrF", ["abc def"], ["abc def"]) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="BLEU"):
        corpus_metric("ROUGE", ["a"], ["a"])
    x = np.arange(5.0)
    a = bootstrap(lambda i: float(x[i].mean()), 5, 20, seed=0)
    b = bootstrap(lambda i: float(x[i].mean() + 1), 5, 20, seed=0)
    np.testing.assert_allclose(b - a, 1.0)  # same resamples: paired


def test_sampled_generation_follows_the_distribution():
    def fixed(ctx):
        return np.tile([0.25, 0.75], (len(ctx), 1))

    out = generate(fixed, np.zeros((4000, 1), dtype=np.int64), 1, seed=0)
    assert abs(out.mean() - 0.75) < 0.03
    assert (generate(fixed, np.zeros((3, 1), dtype=np.int64), 2) == 1).all()  # greedy


def test_quick_text_rfm_learns_a_metric():
    r = run_experiment("rfm_text", quick=True)
    n = 200
    assert r.metrics[f"n={n} RFM best_iter_"] == r.metrics[f"n={n} RFM n_iter_"] == 2
    assert r.metrics[f"n={n} RFM ||M - cI|| / ||M||"] > 0.1
    assert r.metrics[f"n={n} RFM perplexity"] != r.metrics[f"n={n} Laplace kernel perplexity"]
    assert "inconclusive (quick mode)" in r.summary and "BLEU (0-100)" in r.summary
