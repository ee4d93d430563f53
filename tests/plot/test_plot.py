"""kernelens.plot: every function returns a Figure drawing exactly the data it was given."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from kernelens import plot
from kernelens.ntk import NTKSpectrum
from kernelens.rfm import RFMRegressor


def _psd(n=12, seed=0):
    A = np.random.default_rng(seed).normal(size=(n, 5))
    return A @ A.T  # rank 5


def test_spectrum_of_a_matrix_plots_its_float64_eigenvalues():
    K = _psd()
    fig = plot.spectrum(torch.tensor(K), label="toy")
    assert isinstance(fig, Figure)
    ax1, ax2 = fig.axes
    eig = np.sort(np.linalg.eigvalsh(K))[::-1]
    y = ax1.get_lines()[0].get_ydata()
    pos = eig[eig > 0]
    np.testing.assert_allclose(y, pos, rtol=1e-10)
    assert f"{int((eig <= 0).sum())} <= 0 not shown" in ax1.get_title()
    cum = ax2.get_lines()[0].get_ydata()
    np.testing.assert_allclose(cum, np.cumsum(eig) / np.trace(K), rtol=1e-10)
    assert cum[-1] == pytest.approx(1.0)


def test_spectrum_of_an_ntk_spectrum_uses_its_trace():
    s = NTKSpectrum(
        eigenvalues=torch.tensor([4.0, 2.0, 1.0]),
        eigenvectors=torch.eye(3),
        trace=10.0,
        trace_stderr=0.0,
        participation_ratio=2.0,
        participation_ratio_stderr=0.0,
        entropy_rank_topk=2.5,
        lambda_min=0.0,
        condition=float("inf"),
    )
    fig = plot.spectrum(s)
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_ydata(), [0.4, 0.6, 0.7])
    assert fig.axes[1].get_ylabel() == "share of the trace"


def test_spectrum_rejects_bad_input():
    with pytest.raises(ValueError, match="not a symmetric square one"):
        plot.spectrum(np.ones((3, 4)))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        plot.spectrum(np.ones((2, 2, 2)))


def test_metric_heatmap_and_diagonal_from_an_rfm():
    g = np.random.default_rng(0)
    X = g.normal(size=(60, 4))
    est = RFMRegressor(iters=1).fit(X, X[:, 0] ** 2)
    fig = plot.metric(est, feature_names=["a", "b", "c", "d"])
    ax1, ax2 = (next(a for a in fig.axes if a.get_title().startswith(t)) for t in ("M", "diag"))
    M = est.M_.numpy()
    np.testing.assert_allclose(ax1.get_images()[0].get_array(), M)
    np.testing.assert_allclose([p.get_height() for p in ax2.patches], np.diag(M))
    assert [t.get_text() for t in ax2.get_xticklabels()] == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="feature_names has 2 names but M has 4"):
        plot.metric(M, feature_names=["a", "b"])
    with pytest.raises(ValueError, match="square"):
        plot.metric(np.ones((2, 3)))


def test_learning_curves_with_bands():
    fig = plot.learning_curves(
        {
            "RFM": ([10, 100, 1000], [0.5, 0.2, 0.1], [0.05, None, 0.01]),
            "KRR": ([10, 100], [0.6, 0.4]),
        },
        ylabel="MSE",
    )
    (ax,) = fig.axes
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    np.testing.assert_allclose(lines["RFM"].get_ydata(), [0.5, 0.2, 0.1])
    np.testing.assert_allclose(lines["KRR"].get_xdata(), [10, 100])
    assert len(ax.collections) == 1 and ax.get_xscale() == "log" and ax.get_ylabel() == "MSE"
    with pytest.raises(ValueError, match="n has 2 values but score has 3"):
        plot.learning_curves({"x": ([1, 2], [1, 2, 3])})
    with pytest.raises(ValueError, match="curves is empty"):
        plot.learning_curves({})


def test_influences_grid_and_table():
    idx = np.array([[3, 0, 5], [1, 2, 4]])
    shares = np.array([[0.4, -0.2, 0.1], [-0.5, 0.3, 0.05]])
    imgs = np.random.default_rng(0).random((6, 1, 8, 8))
    fig = plot.influences(
        idx,
        shares,
        train_images=imgs,
        test_images=imgs[:2],
        train_labels=np.arange(6) % 2,
        class_names=["cat", "dog"],
    )
    assert len(fig.axes) == 2 * 4
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1] == "#3 +40.0%\ndog" and titles[2] == "#0 -20.0%\ncat"
    np.testing.assert_allclose(fig.axes[1].get_images()[0].get_array(), imgs[3, 0])
    assert fig.axes[2].title.get_color() != fig.axes[1].title.get_color()
    tab = plot.influences(idx, shares)
    cells = tab.axes[0].tables[0].get_celld()
    assert (
        cells[(1, 2)].get_text().get_text() == "3"
        and cells[(2, 4)].get_text().get_text() == "-20.00%"
    )
    assert cells[(4, 5)].get_text().get_text() == "opposes"
    with pytest.raises(ValueError, match="same shape"):
        plot.influences(idx, shares[:, :2])
    with pytest.raises(ValueError, match="needs train_images"):
        plot.influences(idx, shares, kind="images")
    with pytest.raises(ValueError, match="unknown kind"):
        plot.influences(idx, shares, kind="grid")
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 3\)"):
        plot.influences(idx, shares, train_images=imgs[:3])
