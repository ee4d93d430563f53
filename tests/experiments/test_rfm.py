"""RFM experiments: small versions of each part, the n-gram baseline, the text helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernelens.data import encode_text, normalize_text, shakespeare_text
from kernelens.experiments import run_experiment
from kernelens.experiments.rfm.double_descent import clear_peak, double_descent_errors
from kernelens.experiments.rfm.nfa import matrix_similarity, nfa_seed
from kernelens.experiments.rfm.ngram import NGramModel
from kernelens.experiments.rfm.regression import scaling_curve, scaling_variants
from kernelens.experiments.rfm.text import continuations, generate, one_hot, perplexity


def test_scaling_curve_small():
    rows, errs, diags = scaling_curve([8], [0], 300)
    assert [r[1] for r in rows] == ["Laplace kernel", "RFM"]
    assert np.mean(errs[8]["RFM"]) < 0.5 * np.mean(errs[8]["Laplace kernel"])
    assert set(torch.argsort(diags[8], descending=True)[:3].tolist()) == {0, 1, 2}


def test_scaling_variants_rotation():
    rows = scaling_variants(
        6, [0], 200, {"full": {"iters": 2}, "diag": {"iters": 2, "M": "diagonal"}}
    )
    mse = {(r[0], r[1]): r[2] for r in rows}
    # full-metric RFM is rotation-equivariant: same error on rotated inputs
    assert mse[("full", "rotated")] == pytest.approx(mse[("full", "axis-aligned")], rel=1e-6)
    assert mse[("diag", "axis-aligned")] < mse[("diag", "rotated")]


def test_double_descent_errors_small():
    e = double_descent_errors([10, 40], [0, 1], 8, 1.0, n_test=200)
    assert set(e) == {"Laplace kernel", "RFM"} and e["RFM"].shape == (2, 2)
    assert np.isfinite(e["RFM"]).all() and not np.array_equal(e["RFM"], e["Laplace kernel"])


def test_clear_peak_needs_separation_from_seed_spread():
    peaked = np.array([[1.0, 1.1], [5.0, 5.1], [1.0, 1.1]])
    assert clear_peak(peaked) == (0, 1, 2)
    noisy = np.array([[1.0, 3.0], [2.0, 4.0], [1.0, 3.0]])  # bump inside the spread
    assert clear_peak(noisy) is None
    assert clear_peak(peaked[:, :1]) is None  # one seed: no standard error, no peak


def test_matrix_similarity():
    A = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    cos, corr = matrix_similarity(A, 2 * A)
    assert cos == pytest.approx(1.0) and np.isnan(corr)  # 2 off-diagonal entries, equal
    cos_i, _ = matrix_similarity(A, torch.eye(2))
    assert cos_i == pytest.approx(5 / (A.norm().item() * 2**0.5))


def test_nfa_seed_small():
    res, mats = nfa_seed("low-rank", 200, 100, 0)
    assert set(mats) == {"W^T W", "AGOP(net)^1/2", "M(RFM)^1/2"}
    assert all(-1 <= v <= 1 for v in res["cos"].values())
    # the trained first layer is closer to its own AGOP^1/2 than to its untrained Gram
    assert res["cos"]["AGOP(net)^1/2"] > res["cos"]["W0^T W0 (untrained)"]


def test_ngram_matches_hand_computed_kneser_ney():
    # bigram on pairs (history, next): a->b twice, a->c once, b->a once; V = 3, D = 0.5
    contexts = np.array([[0], [0], [0], [1]])
    targets = np.array([1, 1, 2, 0])
    m = NGramModel(2, 3, discount=0.5).fit(contexts, targets)
    # unigram continuation counts: distinct histories before each w: a:1 (b), b:1 (a), c:1 (a)
    p_uni = (np.maximum(np.array([1, 1, 1]) - 0.5, 0) / 3) + 0.5 * 3 / 3 * (np.ones(3) / 3)
    counts_a = np.array([0, 2, 1])
    p_a = np.maximum(counts_a - 0.5, 0) / 3 + 0.5 * 2 / 3 * p_uni
    np.testing.assert_allclose(m.predict_proba(np.array([[0]]))[0], p_a, rtol=1e-12)
    # an unseen history falls back to the unigram level
    np.testing.assert_allclose(m.predict_proba(np.array([[2]]))[0], p_uni, rtol=1e-12)


def test_ngram_models_on_text():
    ids = encode_text(normalize_text(shakespeare_text("sonnets"))).numpy()[:20000]
    ctx = np.stack([ids[i : i + 2] for i in range(len(ids) - 2)])
    nxt = ids[2:]
    tr, te = slice(0, 15000), slice(15000, None)
    ppl = {}
    for order in (1, 2, 3):
        m = NGramModel(order, 51).fit(ctx[tr], nxt[tr])
        P = m.predict_proba(ctx[te])
        np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
        ppl[order] = perplexity(P, nxt[te])
    assert ppl[3] < ppl[2] < ppl[1] < 51


def test_ngram_rejects_bad_arguments():
    with pytest.raises(ValueError, match="discount"):
        NGramModel(2, 5, discount=1.5)
    with pytest.raises(ValueError, match="contexts"):
        NGramModel(3, 5).fit(np.zeros((4, 1), dtype=int), np.zeros(4, dtype=int))


def test_text_helpers():
    assert perplexity(np.full((4, 8), 1 / 8), np.arange(4)) == pytest.approx(8.0)
    X = one_hot(torch.tensor([[0, 2]]), 3)
    np.testing.assert_array_equal(X, [[1, 0, 0, 0, 0, 1]])

    def always_next(ctx):  # predicts "last id + 1"
        P = np.zeros((len(ctx), 5))
        P[np.arange(len(ctx)), (ctx[:, -1] + 1) % 5] = 1
        return P

    np.testing.assert_array_equal(generate(always_next, np.array([[0, 1]]), 4), [[2, 3, 4, 0]])
    text = normalize_text(shakespeare_text())
    prompt = encode_text(text[1000:1064]).numpy()[None]
    assert continuations(prompt, 10) == [text[1064:1074]]
    assert continuations(np.full((1, 64), 50), 10) == [None]  # 64 x "]" never occurs


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["rfm_scaling", "rfm_text", "rfm_double_descent", "rfm_nfa", "rfm_defaults"]
)
def test_quick_experiments_run(name):
    r = run_experiment(name, quick=True)
    assert r.tables and r.figures and r.metrics and r.summary


def test_defaults_sweep_small():
    from kernelens.experiments.rfm.defaults import defaults_sweep

    rows = defaults_sweep([6], [0], 150, {"iters": [0, 2]})
    assert [r[1] for r in rows] == ["0", "2"]
    assert rows[1][3] < rows[0][3]  # feature learning helps on the scaling task
