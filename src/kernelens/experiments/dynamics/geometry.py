"""Data geometry and overfitting (source document 001, "The Geometry of Data, The Fate of
Generalization").

Claim: on two tight clusters the NTK Gram has two large eigenvalues and many near zero; fitting
noisy labels inside a cluster needs those stiff modes, so the RKHS norm ``sum (v_k^T y)^2 /
lambda_k`` explodes and the interpolant oscillates wildly between the points. On well-separated
data the Gram is well conditioned and the norm stays moderate.

We take the empirical NTK of a wide ReLU MLP (NTK parameterisation) on
:func:`kernelens.data.noisy_clusters` with tight (``spread`` 0.05) and wide (``spread`` 0.5)
clusters, the same flipped labels, and follow gradient flow with ``gradient_descent_mse``: the
RKHS norm of the fitted function and the training error along time, the interpolant on a line
through a cluster, and the clean test error.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from ...data import noisy_clusters
from ...dynamics import gradient_descent_mse, rkhs_norm
from ...ntk import empirical_ntk
from ..registry import register
from ..result import Claim, Result, Table
from ._nets import ntk_mlp

__all__ = ["dynamics_data_geometry"]

#: Within-cluster standard deviations of the two data sets.
SPREADS = {"tight clusters": 0.05, "well separated": 0.5}
#: An eigenvalue counts as near zero below this fraction of the largest.
NEAR_ZERO = 1e-3
#: Verdict: the tight set's noisy-to-clean RKHS norm ratio must exceed the separated set's by
#: this factor ...
FACTOR = 10.0
#: ... and its interpolant's total variation on the line through a cluster (in units of the
#: label range) must exceed the separated set's by this factor (it oscillates).
OSCILLATION = 2.0


def _case(spread: float, n: int, width: int, times: np.ndarray) -> dict:
    data = noisy_clusters(n, flip=0.2, spread=spread, d=2, n_test=200, seed=0, dtype=torch.float64)
    x, xt = data.X_train, data.X_test
    y = (2.0 * data.y_train - 1).double()[:, None]
    clean = (2.0 * data.info["clean_y_train"] - 1).double()[:, None]
    yt = (2.0 * data.y_test - 1).double()[:, None]
    line = torch.zeros(400, 2, dtype=torch.float64)
    line[:, 0] = torch.linspace(1 - 4 * spread, 1 + 4 * spread, 400)
    model = ntk_mlp(2, width, depth=2)
    k = empirical_ntk(model, x, output="trace")
    k_t = empirical_ntk(model, torch.cat([xt, line]), x, output="trace")
    evals = torch.linalg.eigvalsh(k).flip(0)
    pred = gradient_descent_mse(k, y, learning_rate=1.0)
    # RKHS norm of the fitted function f_t - f_0 = K alpha_t along the flow:
    # sum_k c_k^2 (rho_k - 1)^2 / lambda_k, from the same per-mode factors as the prediction
    rm1, inv = pred.factors(torch.as_tensor(times))
    c2 = ((pred.eigh.evecs.T @ y) ** 2).sum(1)
    norm_t = (c2[None] * rm1 * inv).sum(1).numpy()
    train_t = pred(torch.as_tensor(times), 0.0)  # [T, N, 1] (zero initial function)
    train_err = ((train_t - y) ** 2).mean((1, 2)).sqrt().numpy()
    # the end of the flow stands in for t = inf: a Gram this clustered is singular to working
    # precision, so the exact limit does not exist in floating point (t=None refuses)
    _, f_inf = pred(float(times[-1]), 0.0, 0.0, k_t)
    f_test, f_line = f_inf[: xt.shape[0]], f_inf[xt.shape[0] :, 0]
    early = times[np.argmin(np.abs(norm_t - 2 * rkhs_norm(k, clean).value))]
    _, f_early = pred(float(early), 0.0, 0.0, k_t)
    return {
        "evals": evals.numpy(),
        "near_zero": int((evals < NEAR_ZERO * evals[0]).sum()),
        "cond": float(evals[0] / evals[-1].clamp_min(1e-300)),
        "norm_noisy": rkhs_norm(k, y).value,
        "dropped": rkhs_norm(k, y).n_dropped,
        "train_err_end": float(train_err[-1]),
        "norm_clean": rkhs_norm(k, clean).value,
        "norm_t": norm_t,
        "train_err": train_err,
        "test_err_inf": float((torch.sign(f_test) != yt).double().mean()),
        "test_err_early": float((torch.sign(f_early[: xt.shape[0]]) != yt).double().mean()),
        "line_x": line[:, 0].numpy(),
        "line_f": f_line.numpy(),
        "line_range": float(f_line.max() - f_line.min()),
        # oscillation: total variation along the line, in units of the label range (2)
        "line_tv": float((f_line[1:] - f_line[:-1]).abs().sum() / 2),
        "x": x.numpy(),
        "y": y[:, 0].numpy(),
    }


@register(
    "dynamics_data_geometry",
    title="Data geometry and overfitting: tight clusters make the RKHS norm explode",
    area="dynamics",
)
def dynamics_data_geometry(quick: bool = True) -> Result:
    """Tight vs well-separated clusters with noisy labels: spectrum, RKHS norm, interpolant."""
    n, width = (30, 256) if quick else (100, 4096)
    times = np.logspace(-1, 10, 56)
    cases = {name: _case(s, n, width, times) for name, s in SPREADS.items()}
    rows = []
    for name, c in cases.items():
        rows.append(
            [
                name,
                c["near_zero"],
                c["cond"],
                c["norm_clean"],
                c["norm_noisy"],
                c["norm_noisy"] / c["norm_clean"],
                c["line_range"],
                c["line_tv"],
                c["test_err_early"],
                c["test_err_inf"],
            ]
        )
    tight, sep = cases["tight clusters"], cases["well separated"]
    ratio_t = tight["norm_noisy"] / tight["norm_clean"]
    ratio_s = sep["norm_noisy"] / sep["norm_clean"]
    parts = {
        "near-zero spectrum": tight["near_zero"] >= n // 2
        and sep["near_zero"] < tight["near_zero"],
        "RKHS norm explosion": ratio_t > FACTOR * ratio_s,
        "oscillating interpolant": tight["line_tv"] > OSCILLATION * sep["line_tv"],
    }
    ok = all(parts.values())
    verdict = "; ".join(f"{k}: {'reproduced' if v else 'not reproduced'}" for k, v in parts.items())
    if quick:
        verdict = f"{verdict} (quick mode: inconclusive at this size)"
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for name, c in cases.items():
        ax[0].semilogy(np.arange(1, n + 1), c["evals"] / c["evals"][0], ".-", label=name)
        ax[1].loglog(times, c["norm_t"], label=f"{name}: RKHS norm")
        ax[1].loglog(times, c["train_err"], "--", label=f"{name}: train RMS error")
        ax[2].plot(c["line_x"] - 1, c["line_f"], label=name)
    ax[0].axhline(NEAR_ZERO, color="k", ls=":", lw=1)
    ax[0].set_xlabel("rank k")
    ax[0].set_ylabel("lambda_k / lambda_1")
    ax[0].set_title("NTK spectrum")
    ax[0].legend()
    ax[1].set_xlabel("time t (gradient flow)")
    ax[1].set_title("fitting the noise: ||f_t||_H^2 and train error")
    ax[1].legend(fontsize=7)
    ax[2].set_xlabel("x1 - 1 (line through the +e1 cluster, +-4 spread)")
    ax[2].set_ylabel("interpolant f_inf")
    ax[2].set_title(f"the interpolant at t = {times[-1]:.0e}")
    ax[2].legend()
    fig.tight_layout()
    summary = (
        "Claim (source 001): tight clusters give a nearly rank-deficient NTK, and interpolating "
        "noisy labels inside them makes the RKHS norm explode and the interpolant oscillate, "
        f"unlike well-separated data. Ours ({n} points, 20 % labels flipped, empirical NTK of a "
        f"width-{width} ReLU MLP): tight clusters have {tight['near_zero']} of {n} eigenvalues "
        f"below {NEAR_ZERO:g} lambda_max (separated: {sep['near_zero']}); the noisy labels' "
        f"RKHS norm is {ratio_t:.3g}x the clean labels' (separated: {ratio_s:.3g}x); the "
        f"interpolant spans {tight['line_range']:.3g} on a line through one tight cluster "
        f"(labels span 2; separated: {sep['line_range']:.3g}) and its total variation there is "
        f"{tight['line_tv']:.3g} label ranges (separated: {sep['line_tv']:.3g}); clean test error "
        f"{tight['test_err_inf']:.1%} at the end of the flow (t = {times[-1]:.0e}, train RMS "
        f"error {tight['train_err_end']:.2g}; the exact t = inf limit does not exist in floating "
        f"point: the Gram is singular to working precision) vs {tight['test_err_early']:.1%} early-stopped "
        f"(separated {sep['test_err_inf']:.1%} vs {sep['test_err_early']:.1%}). Verdict: "
        f"{verdict}."
    )
    metrics = {
        "tight near-zero eigenvalues": float(tight["near_zero"]),
        "separated near-zero eigenvalues": float(sep["near_zero"]),
        "tight norm ratio noisy/clean": ratio_t,
        "separated norm ratio noisy/clean": ratio_s,
        "tight interpolant range": tight["line_range"],
        "separated interpolant range": sep["line_range"],
        "tight interpolant variation": tight["line_tv"],
        "separated interpolant variation": sep["line_tv"],
        "tight test error t=inf": tight["test_err_inf"],
        "tight test error early": tight["test_err_early"],
        "reproduced": float(ok),
        **{f"{k} reproduced": float(v) for k, v in parts.items()},
    }
    claim = Claim(
        "Tight clusters give a nearly rank-deficient NTK; interpolating noisy labels in them "
        "makes the RKHS norm explode and the interpolant oscillate, unlike separated data.",
        f"near-zero eigenvalues {tight['near_zero']} of {n} (separated {sep['near_zero']}); "
        f"noisy / clean RKHS norm {ratio_t:.3g}x (separated {ratio_s:.3g}x); interpolant total "
        f"variation {tight['line_tv']:.3g} label ranges (separated {sep['line_tv']:.3g})",
        "reproduced" if ok else "not reproduced",
        source="001, the geometry of data and generalisation",
    )
    return Result(
        name="dynamics_data_geometry",
        claims=[claim],
        title="Data geometry and overfitting",
        summary=summary,
        tables=[
            Table(
                "Spectrum, RKHS norm and interpolant",
                [
                    "data",
                    f"eigenvalues < {NEAR_ZERO:g} max",
                    "condition number",
                    "RKHS norm (clean labels)",
                    "RKHS norm (noisy labels)",
                    "ratio",
                    "interpolant range on the line",
                    "total variation / 2",
                    "test error (early stop)",
                    "test error (end of flow)",
                ],
                rows,
            )
        ],
        figures=[("Spectrum, RKHS norm along training, and the interpolant", fig)],
        metrics=metrics,
    )
