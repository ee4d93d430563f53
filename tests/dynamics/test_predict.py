"""gradient_descent_mse against neural-tangents 0.6.5 fixtures, against explicit iteration, and
its input checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kernelens.dynamics import gradient_descent_mse

FIX = np.load(Path(__file__).parent / "fixtures" / "predict.npz")
CASES = [
    (kind, lr, reg, ab)
    for kind in ("shared", "full")
    for lr in (0.5, 1.0, 3.0)
    for reg in (0.0, 1e-3)
    for ab in ((False, True) if reg else (False,))
]
RTOL = 1e-9


def _t(name: str) -> torch.Tensor:
    return torch.tensor(FIX[name])


def _rel(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.abs(a.numpy() - b).max() / np.abs(b).max())


@pytest.mark.parametrize(("kind", "lr", "reg", "absolute"), CASES)
def test_matches_neural_tangents(kind, lr, reg, absolute):
    key = f"{kind}_lr{lr}_reg{reg}_abs{int(absolute)}"
    p = gradient_descent_mse(_t(f"{kind}_k_dd"), _t("y_train"), lr, reg, absolute)
    f0, g0, ktd = _t("fx_train_0"), _t("fx_test_0"), _t(f"{kind}_k_td")
    tr, te = p(_t("times"), f0, g0, ktd)
    assert tr.shape == FIX[f"{key}_train_t"].shape and te.shape == FIX[f"{key}_test_t"].shape
    assert _rel(tr, FIX[f"{key}_train_t"]) < RTOL
    assert _rel(te, FIX[f"{key}_test_t"]) < RTOL
    tr, te = p(None, f0, g0, ktd)
    assert _rel(tr, FIX[f"{key}_train_inf"]) < RTOL
    assert _rel(te, FIX[f"{key}_test_inf"]) < RTOL
    assert _rel(p(_t("times")), FIX[f"{key}_train0_t"]) < RTOL


def _spd(n, o=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n * (o or 1), n * (o or 1) + 3, generator=g, dtype=torch.float64)
    k = a @ a.T / a.shape[1]
    return k if o is None else k.reshape(n, o, n, o).permute(0, 2, 1, 3)


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("momentum", [None, 0.0, 0.9])
def test_discrete_equals_explicit_steps(full, momentum):
    n, m, o, lr, steps = 7, 4, 2, 1.3, 25
    k_all = _spd(n + m, o if full else None)
    k_dd = k_all[:n, :n]
    k_td = k_all[n:, :n]
    g = torch.Generator().manual_seed(1)
    y = torch.randn(n, o, generator=g, dtype=torch.float64)
    f = torch.randn(n, o, generator=g, dtype=torch.float64)
    h = torch.randn(m, o, generator=g, dtype=torch.float64)
    p = gradient_descent_mse(k_dd, y, lr, discrete=True, momentum=momentum)
    tr, te = p(torch.tensor([0, 1, 5, steps]), f, h, k_td)

    def apply(k, r):  # kernel times residual [N, O]
        if not full:
            return k @ r
        return torch.einsum("ijab,jb->ia", k, r)

    ff, hh = f.clone(), h.clone()
    bf, bh = torch.zeros_like(f), torch.zeros_like(h)
    beta = momentum or 0.0
    traj = {0: (ff.clone(), hh.clone())}
    for s in range(1, steps + 1):
        r = (ff - y) / y.numel()
        bf, bh = beta * bf + apply(k_dd, r), beta * bh + apply(k_td, r)
        ff, hh = ff - lr * bf, hh - lr * bh
        traj[s] = (ff.clone(), hh.clone())
    for i, s in enumerate((0, 1, 5, steps)):
        torch.testing.assert_close(tr[i], traj[s][0], rtol=1e-11, atol=1e-12)
        torch.testing.assert_close(te[i], traj[s][1], rtol=1e-11, atol=1e-12)


def test_discrete_power_is_exact_and_tends_to_the_flow():
    k = _spd(6)
    y = torch.randn(6, 1, dtype=torch.float64)
    pd = gradient_descent_mse(k, y, learning_rate=1e-3, discrete=True)
    pc = gradient_descent_mse(k, y, learning_rate=1e-3)
    # per-mode factor (1 - lr lambda / n)^t
    lam = pd.eigh.evals
    np.testing.assert_allclose(
        pd.residual_factors(1000).numpy(), ((1 - 1e-3 * lam / 6) ** 1000).numpy(), rtol=1e-12
    )
    # small steps: gradient descent approaches gradient flow
    torch.testing.assert_close(pd(1000), pc(1000), rtol=1e-3, atol=1e-4)


def test_infinite_time_limits():
    k = _spd(5)
    y = torch.randn(5, 2, dtype=torch.float64)
    kt = torch.randn(3, 5, dtype=torch.float64)
    for kw in ({}, {"discrete": True}, {"discrete": True, "momentum": 0.5}):
        p = gradient_descent_mse(k, y, 0.5, **kw)
        tr, te = p(None, 0.0, 0.0, kt)
        torch.testing.assert_close(tr, y)
        torch.testing.assert_close(te, kt @ torch.linalg.solve(k, y))
    # a large but finite time approaches the limit
    p = gradient_descent_mse(k, y, 1.0)
    torch.testing.assert_close(p(1e9, 0.0, 0.0, kt)[1], p(None, 0.0, 0.0, kt)[1])


def test_vector_targets_and_time_axes():
    k = _spd(5)
    y = torch.randn(5, dtype=torch.float64)
    p = gradient_descent_mse(k, y)
    out = p(torch.ones(2, 3))
    assert out.shape == (2, 3, 5)
    torch.testing.assert_close(out[0, 0], gradient_descent_mse(k, y[:, None])(1.0)[:, 0])
    only_test = p(2.0, None, 0.0, torch.randn(4, 5, dtype=torch.float64))
    assert only_test.shape == (4,)


def test_zero_eigenvalue_uses_the_limit():
    v = torch.randn(4, 1, dtype=torch.float64)
    k = v @ v.T  # rank one: three zero modes
    y = torch.randn(4, 1, dtype=torch.float64)
    kt = torch.randn(2, 1, dtype=torch.float64) @ v.T
    tr, te = gradient_descent_mse(k, y)(3.0, 0.0, 0.0, kt)
    assert torch.isfinite(tr).all() and torch.isfinite(te).all()
    with pytest.raises(ValueError, match="singular"):
        gradient_descent_mse(k, y)(None, 0.0, 0.0, kt)
    # diag_reg makes it invertible
    assert torch.isfinite(gradient_descent_mse(k, y, diag_reg=1e-3)(None, 0.0, 0.0, kt)[1]).all()


def test_input_errors():
    k = _spd(4)
    y = torch.randn(4, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="positive semi-definite"):
        gradient_descent_mse(k - 2 * torch.eye(4, dtype=torch.float64), y)(1.0)
    with pytest.raises(ValueError, match="symmetric"):
        gradient_descent_mse(k + torch.triu(torch.ones(4, 4, dtype=torch.float64), 1), y)
    with pytest.raises(ValueError, match="NaN"):
        bad = k.clone()
        bad[0, 0] = float("nan")
        gradient_descent_mse(bad, y)
    with pytest.raises(ValueError, match="rows"):
        gradient_descent_mse(k, torch.randn(3, 1))
    with pytest.raises(ValueError, match="square"):
        gradient_descent_mse(torch.randn(4, 3), y)
    with pytest.raises(ValueError, match="discrete=True"):
        gradient_descent_mse(k, y, momentum=0.9)
    with pytest.raises(ValueError, match="whole numbers"):
        gradient_descent_mse(k, y, discrete=True)(1.5)
    with pytest.raises(ValueError, match="non-negative"):
        gradient_descent_mse(k, y)(-1.0)
    with pytest.raises(ValueError, match="k_test_train"):
        gradient_descent_mse(k, y)(1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="nothing to predict"):
        gradient_descent_mse(k, y)(1.0, None)
    with pytest.raises(ValueError, match=r"\[M, 4\]"):
        gradient_descent_mse(k, y)(1.0, 0.0, 0.0, torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="diverges"):
        gradient_descent_mse(k, y, learning_rate=1e6, discrete=True)(None)
    with pytest.raises(ValueError, match="learning_rate"):
        gradient_descent_mse(k, y, learning_rate=0.0)
