"""Issue 16 §4: top_influences, the message for a trained model, and the reprs."""

from __future__ import annotations

import pytest
import torch

from kernelens.epk import ExactPathKernel


def test_top_influences_sorted_shares_of_the_predicted_class(train, x_test):
    epk = ExactPathKernel(train("momentum"))
    d = epk.decompose(x_test)
    idx, shares = epk.top_influences(x_test, 4)
    assert idx.shape == shares.shape == (3, 4) and idx.dtype == torch.int64
    pred = d.network.argmax(1)
    for t in range(3):
        a = d.attributions[t, :, pred[t]]
        full = a / a.abs().sum()
        torch.testing.assert_close(shares[t], full[idx[t]])
        assert bool((shares[t].abs()[:-1] >= shares[t].abs()[1:]).all())
        assert float(shares[t].abs().min()) >= float(full.abs().sort().values[-4])
    all_idx, all_shares = epk.top_influences(x_test, 12)
    torch.testing.assert_close(all_shares.abs().sum(1), torch.ones(3, dtype=torch.float64))
    assert sorted(all_idx[0].tolist()) == list(range(12))


def test_top_influences_for_a_target_class(train, x_test):
    epk = ExactPathKernel(train("sgd"))
    a = epk.attributions(x_test)
    idx, _ = epk.top_influences(x_test, 2, target=1)
    idx2, _ = epk.top_influences(x_test, 2, target=torch.tensor([1, 1, 1]))
    assert torch.equal(idx, idx2)
    for t in range(3):
        assert int(idx[t, 0]) == int(a[t, :, 1].abs().argmax())
    with pytest.raises(ValueError, match=r"k=13 exceeds .* N=12"):
        epk.top_influences(x_test, 13)
    with pytest.raises(ValueError, match=r"target classes must lie in \[0, 3\)"):
        epk.top_influences(x_test, 2, target=3)
    with pytest.raises(ValueError, match="target has 2 classes but x_test has 3 rows"):
        epk.top_influences(x_test, 2, target=[0, 1])
    with pytest.raises(TypeError, match="target must be an int"):
        epk.top_influences(x_test, 2, target=1.0)


def test_reprs(train, x_test):
    traj = train("adamw")
    epk = ExactPathKernel(traj, output="log_probs")
    assert repr(epk).startswith("ExactPathKernel(AdamW, steps=6, examples=12, output='log_probs'")
    assert "schedule=backward" in repr(epk)
    rep = epk.verify(x_test)
    assert repr(rep).startswith("VerifyReport(passed=True, max_rel_error=")
    assert repr(rep.details).startswith("PathDecomposition(T=3, O=3, steps=6, rel_error=")
    assert repr(epk.path).startswith("PathModel(output='log_probs', dtype=torch.float64")
    assert repr(traj).startswith("Trajectory(AdamW, steps=6")
    assert repr(traj.step(1)) == (
        f"StepRecord(step=1, batch=5, inputs=[5, 2], loss={traj.step(1).loss:.6g}, preconditioned)"
    )
