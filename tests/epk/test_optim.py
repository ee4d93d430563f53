"""The recorded optimizer algebra reproduces torch.optim's actual steps to float64 precision."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from kernelens.epk import TrajectoryRecorder, fit
from kernelens.epk.optim import BackwardAccumulator, forward_update


def _per_example_grads(traj, s):
    """[B, P] float64 loss gradients of each batch example at w_s, by an autograd loop that
    recomputes the loss from the targets (independent of the recorded dL/df)."""
    rec, w = traj.step(s), traj.weights(s)
    names = traj.param_names
    out = []
    for j in range(rec.batch_size):
        wr = {k: v.detach().clone().requires_grad_(True) for k, v in w.items()}
        f = functional_call(traj.model, {**traj.static(), **wr}, (rec.inputs[j : j + 1],))
        if traj.header.loss == "cross_entropy":
            loss = F.cross_entropy(f, rec.targets[j : j + 1])
        else:
            loss = F.mse_loss(f, rec.targets[j : j + 1])
        grads = torch.autograd.grad(loss, [wr[k] for k in names])
        out.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(out)


def _unflat(traj, v):
    out, k = {}, 0
    for name in traj.param_names:
        shape = traj.weights(0)[name].shape
        n = shape.numel()
        out[name] = v[k : k + n].reshape(shape)
        k += n
    return out


def _check_reproduces_steps(traj):
    group_of = traj.header.group_of
    buffers: dict = {}
    worst = 0.0
    for s in range(traj.num_steps):
        rec = traj.step(s)
        e = _unflat(traj, _per_example_grads(traj, s).mean(0))
        w0, w1 = traj.weights(s), traj.weights(s + 1)
        direction = {k: e[k] + rec.rules[group_of[k]].l2 * w0[k] for k in e}
        upd = forward_update(rec.rules, group_of, buffers, direction, rec.preconditioners)
        for k in e:
            pred = upd[k] - rec.rules[group_of[k]].decoupled * w0[k]
            actual = w1[k] - w0[k]
            worst = max(worst, float((pred - actual).abs().max() / actual.abs().max()))
    return worst


def test_coefficients_reproduce_every_step(train, opt_name):
    traj = train(opt_name, epochs=3)
    assert traj.num_steps == 9
    assert _check_reproduces_steps(traj) < 1e-12


def test_coefficients_with_mse_and_lr_schedule(tanh_mlp, toy_data):
    torch.manual_seed(1)
    model = tanh_mlp()
    X, y = toy_data()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    traj = fit(model, X, F.one_hot(y, 3).double(), optimizer=opt, epochs=2, batch_size=4,
               loss="mse", scheduler=sched)  # fmt: skip
    lrs = [traj.step(s).hyper[0]["lr"] for s in range(traj.num_steps)]
    assert lrs == [0.2, 0.2, 0.1, 0.1, 0.05, 0.05]
    assert _check_reproduces_steps(traj) < 1e-12


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam])
def test_one_cycle_schedule_varies_momentum_and_betas(tanh_mlp, toy_data, opt_cls):
    """OneCycleLR changes lr *and* momentum / beta1 every step; both are recorded per step."""
    torch.manual_seed(2)
    model = tanh_mlp()
    X, y = toy_data()
    kw = {"momentum": 0.9} if opt_cls is torch.optim.SGD else {}
    opt = opt_cls(model.parameters(), lr=0.05, **kw)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=20)
    traj = fit(model, X, y, optimizer=opt, epochs=3, batch_size=4, scheduler=sched)
    key = "momentum" if opt_cls is torch.optim.SGD else "beta1"
    assert len({traj.step(s).hyper[0][key] for s in range(traj.num_steps)}) > 3
    assert _check_reproduces_steps(traj) < 1e-12


def test_param_groups_with_different_hyperparameters(tanh_mlp, toy_data):
    torch.manual_seed(3)
    model = tanh_mlp()
    X, y = toy_data()
    opt = torch.optim.SGD(
        [{"params": model[0].parameters(), "lr": 0.5, "weight_decay": 0.1},
         {"params": model[2].parameters(), "momentum": 0.5}],
        lr=0.1,
    )  # fmt: skip
    traj = fit(model, X, y, optimizer=opt, epochs=2, batch_size=5)
    assert traj.header.num_groups == 2
    assert _check_reproduces_steps(traj) < 1e-12


def test_frozen_parameters_are_static(tanh_mlp, toy_data):
    model = tanh_mlp()
    model[0].bias.requires_grad_(False)
    X, y = toy_data()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    traj = fit(model, X, y, optimizer=opt, epochs=1, batch_size=6)
    assert "0.bias" not in traj.param_names
    assert "0.bias" in traj.static()
    assert _check_reproduces_steps(traj) < 1e-12


def test_adam_preconditioner_matches_an_independent_second_moment(train):
    """D_s recorded from torch's state equals sqrt(v_s / (1 - b2^t)) + eps with v recomputed
    from the batch gradients (plus L2 decay) in float64."""
    traj = train("adam_l2", epochs=2)
    v = None
    for s in range(traj.num_steps):
        rec = traj.step(s)
        h = rec.hyper[0]
        g = _per_example_grads(traj, s).mean(0)
        w = torch.cat([traj.weights(s)[k].reshape(-1) for k in traj.param_names])
        g = g + h["weight_decay"] * w
        v = (1 - h["beta2"]) * g * g if v is None else h["beta2"] * v + (1 - h["beta2"]) * g * g
        denom = (v / (1 - h["beta2"] ** h["step"])).sqrt() + h["eps"]
        recorded = torch.cat([rec.preconditioners[k].reshape(-1) for k in traj.param_names])
        torch.testing.assert_close(recorded, denom, rtol=1e-12, atol=0)


def test_backward_accumulation_equals_forward_sum(train, opt_name):
    """sum_s <gbar_s, E_s> (forward buffers) == sum_r <G_r, e_r> (backward recursion)."""
    traj = train(opt_name, epochs=2)
    group_of = traj.header.group_of
    gen = torch.Generator().manual_seed(0)
    S = traj.num_steps
    shapes = {k: v.shape for k, v in traj.weights(0).items()}
    gbar = [{k: torch.randn(4, *sh, generator=gen, dtype=torch.float64) for k, sh in shapes.items()}
            for _ in range(S)]  # fmt: skip
    e = [{k: torch.randn(*sh, generator=gen, dtype=torch.float64) for k, sh in shapes.items()}
         for _ in range(S)]  # fmt: skip
    forward = torch.zeros(4, dtype=torch.float64)
    buffers: dict = {}
    for s in range(S):
        rec = traj.step(s)
        upd = forward_update(rec.rules, group_of, buffers, e[s], rec.preconditioners)
        forward += sum((gbar[s][k] * upd[k]).flatten(1).sum(1) for k in shapes)
    backward = torch.zeros(4, dtype=torch.float64)
    acc = BackwardAccumulator(group_of)
    for r in reversed(range(S)):
        rec = traj.step(r)
        G = acc.push(rec.rules, gbar[r], rec.preconditioners)
        backward += sum((G[k] * e[r][k]).flatten(1).sum(1) for k in shapes)
    torch.testing.assert_close(backward, forward, rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------------------- bad optimizers
def _rec(model, opt):
    return TrajectoryRecorder(model, opt, num_examples=4)


def test_unsupported_optimizer_lists_supported(tanh_mlp):
    model = tanh_mlp()
    with pytest.raises(TypeError, match=r"RMSprop is not supported.*torch\.optim\.SGD"):
        _rec(model, torch.optim.RMSprop(model.parameters()))

    class MySGD(torch.optim.SGD):
        pass

    with pytest.raises(TypeError, match="MySGD is not supported"):
        _rec(model, MySGD(model.parameters(), lr=0.1))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: torch.optim.Adam(p, differentiable=True), "differentiable=True"),
        (lambda p: torch.optim.SGD(p, lr=0.1, maximize=True), "maximize=True"),
        (lambda p: torch.optim.AdamW(p, maximize=True), "maximize=True"),
    ],
)
def test_unsupported_optimizer_options(tanh_mlp, make, match):
    model = tanh_mlp()
    with pytest.raises(ValueError, match=match):
        _rec(model, make(model.parameters()))


def test_optimizer_that_already_stepped_is_rejected(tanh_mlp):
    model = tanh_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 2, dtype=torch.float64)).sum().backward()
    opt.step()
    with pytest.raises(ValueError, match="already has state"):
        _rec(model, opt)


def test_optimizer_over_foreign_or_frozen_tensors(tanh_mlp):
    model = tanh_mlp()
    stray = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="not a parameter of model"):
        _rec(model, torch.optim.SGD([*model.parameters(), stray], lr=0.1))
    model[0].weight.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad=False"):
        _rec(model, torch.optim.SGD(model.parameters(), lr=0.1))
