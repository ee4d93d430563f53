"""TrajectoryRecorder and fit: what is recorded, and clear errors for bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kernelens.epk import TrajectoryRecorder, fit


def _recorder(tanh_mlp, **kw):
    model = tanh_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, TrajectoryRecorder(model, opt, num_examples=kw.pop("num_examples", 10), **kw)


def test_records_weights_batches_and_output_gradients(tanh_mlp, toy_data):
    model, rec = _recorder(tanh_mlp, num_examples=12)
    X, y = toy_data()
    w0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    idx = torch.tensor([3, 7, 1])
    loss = rec.step(X[idx], y[idx], idx)
    traj = rec.trajectory
    assert traj.num_steps == 1 and traj.num_outputs == 3 and traj.num_examples == 12
    for k in w0:
        assert torch.equal(traj.weights(0)[k], w0[k])
        assert torch.equal(traj.weights(1)[k], dict(model.named_parameters())[k].detach())
    r = traj.step(0)
    assert torch.equal(r.indices, idx) and torch.equal(r.inputs, X[idx])
    f0 = torch.func.functional_call(model, w0, (X[idx],))
    torch.testing.assert_close(r.outputs, f0)
    # dL/df of cross-entropy on logits is softmax - onehot
    torch.testing.assert_close(r.output_grads, F.softmax(f0, 1) - F.one_hot(y[idx], 3).double())
    ce = F.cross_entropy(f0, y[idx])
    assert loss == pytest.approx(float(ce), rel=1e-14)
    assert r.rules[0].alpha == 0.1 and r.rules[0].beta == 0.0


def test_fit_covers_every_example_each_epoch(tanh_mlp, toy_data):
    model = tanh_mlp()
    X, y = toy_data(n=10)
    traj = fit(model, X, y, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=2,
               batch_size=4, seed=3)  # fmt: skip
    assert traj.num_steps == 6
    batches = [traj.step(s).indices.tolist() for s in range(traj.num_steps)]
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(i for b in batches[:3] for i in b) == list(range(10))
    idx, inputs = traj.training_examples()
    assert idx.tolist() == list(range(10)) and torch.equal(inputs, X)


def test_callable_loss(tanh_mlp, toy_data):
    model = tanh_mlp()
    X, y = toy_data()

    def huber(out, target):
        return F.huber_loss(out, F.one_hot(target, 3).double(), reduction="none").mean(1)

    traj = fit(model, X, y, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
               batch_size=6, loss=huber)  # fmt: skip
    assert traj.header.loss == "callable"

    def bad(out, target):
        return F.cross_entropy(out, target)  # a scalar, not per example

    model = tanh_mlp()
    rec = TrajectoryRecorder(model, torch.optim.SGD(model.parameters(), lr=0.1), bad,
                             num_examples=12)  # fmt: skip
    with pytest.raises(ValueError, match="one value per example"):
        rec.step(X[:3], y[:3], torch.arange(3))


def test_nan_loss_is_reported_and_nothing_changes(tanh_mlp, toy_data):
    model, rec = _recorder(tanh_mlp, num_examples=12, loss="mse")
    X, _ = toy_data()
    Y = torch.zeros(12, 3, dtype=torch.float64)
    rec.step(X[:3], Y[:3], torch.arange(3))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    Xbad = X[3:6].clone()
    Xbad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        rec.step(Xbad, Y[3:6], torch.arange(3, 6))
    Ybad = Y[3:6].clone()
    Ybad[2, 1] = float("inf")
    with pytest.raises(FloatingPointError, match=r"loss is NaN or Inf at step 1 .*\[5\].*intact"):
        rec.step(X[3:6], Ybad, torch.arange(3, 6))
    assert rec.num_steps == 1 and rec.trajectory.num_steps == 1
    for k, v in model.named_parameters():
        assert torch.equal(v.detach(), before[k])
    rec.step(X[3:6], Y[3:6], torch.arange(3, 6))  # recording continues after the error
    assert rec.trajectory.num_steps == 2


def test_bad_batches(tanh_mlp, toy_data):
    _, rec = _recorder(tanh_mlp, num_examples=12)
    X, y = toy_data()
    with pytest.raises(ValueError, match=r"indices must lie in \[0, num_examples=12\)"):
        rec.step(X[:2], y[:2], torch.tensor([0, 12]))
    with pytest.raises(ValueError, match="x_batch has 3 rows but indices has 2"):
        rec.step(X[:3], y[:2], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="1-D integer"):
        rec.step(X[:2], y[:2], torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="empty"):
        rec.step(X[:0], y[:0], torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="class indices"):
        rec.step(X[:2], y[:2].double(), torch.tensor([0, 1]))
    rec.step(X[:2], y[:2], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="example 1 arrived with a different input"):
        rec.step(X[2:4], y[2:4], torch.tensor([1, 2]))


def test_wrong_model_output_shape(toy_data):
    model = nn.Sequential(nn.Linear(2, 1), nn.Flatten(0)).double()
    rec = TrajectoryRecorder(model, torch.optim.SGD(model.parameters(), lr=0.1), "mse",
                             num_examples=12)  # fmt: skip
    X, _ = toy_data()
    with pytest.raises(ValueError, match=r"\[B, O\] tensor"):
        rec.step(X[:3], torch.zeros(3, dtype=torch.float64), torch.arange(3))


def test_model_changed_outside_the_recorder(tanh_mlp, toy_data):
    model, rec = _recorder(tanh_mlp, num_examples=12)
    X, y = toy_data()
    rec.step(X[:3], y[:3], torch.arange(3))
    with torch.no_grad():
        model[2].bias.add_(0.01)
    with pytest.raises(RuntimeError, match="'2.bias' changed outside the recorder"):
        rec.step(X[3:6], y[3:6], torch.arange(3, 6))


def test_step_that_breaks_the_update_law_is_caught(tanh_mlp, toy_data):
    model = tanh_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = TrajectoryRecorder(model, opt, num_examples=12)
    X, y = toy_data()

    def sabotage(optimizer, args, kwargs):
        with torch.no_grad():
            model[0].weight.mul_(1.01)

    opt.register_step_post_hook(sabotage)
    with pytest.raises(RuntimeError, match="deviates from the recorded update law"):
        rec.step(X[:3], y[:3], torch.arange(3))


@pytest.mark.parametrize(
    ("layer", "match"),
    [(nn.Dropout(0.2), "Dropout.*training mode"), (nn.BatchNorm1d(6), "BatchNorm1d.*training")],
)
def test_nondeterministic_layers_in_training_mode(layer, match):
    model = nn.Sequential(nn.Linear(2, 6), layer, nn.Tanh(), nn.Linear(6, 3)).double()
    with pytest.raises(ValueError, match=match):
        TrajectoryRecorder(model, torch.optim.SGD(model.parameters(), lr=0.1), num_examples=4)
    model.eval()  # fine once in eval mode
    TrajectoryRecorder(model, torch.optim.SGD(model.parameters(), lr=0.1), num_examples=4)


def test_unused_parameter_is_reported(toy_data):
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 3)
            self.unused = nn.Linear(2, 3)

        def forward(self, x):
            return self.a(x)

    model = TwoHeads().double()
    rec = TrajectoryRecorder(model, torch.optim.SGD(model.parameters(), lr=0.1), num_examples=12)
    X, y = toy_data()
    with pytest.raises(RuntimeError, match="'unused.weight' received no gradient"):
        rec.step(X[:3], y[:3], torch.arange(3))


def test_trajectory_before_any_step(tanh_mlp):
    _, rec = _recorder(tanh_mlp)
    with pytest.raises(RuntimeError, match="no training step"):
        _ = rec.trajectory


def test_fit_checks_its_arguments(tanh_mlp, toy_data):
    model = tanh_mlp()
    X, y = toy_data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="same number of rows"):
        fit(model, X, y[:5], optimizer=opt, epochs=1, batch_size=4)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        fit(model, X, y, optimizer=opt, epochs=0, batch_size=4)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        fit(model, X, y, optimizer=opt, epochs=1, batch_size=4, loss="hinge")
