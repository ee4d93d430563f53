"""Issue 10, items 7 and 9: every change of a step that the recorded loss gradients do not
explain is refused while recording or reported (and failed) by verify; norm clipping is exact."""

from __future__ import annotations

import pytest
import torch

from kernelens.epk import EPKVerificationError, ExactPathKernel, TrajectoryRecorder, fit
from kernelens.epk.reference import reference_path_decomposition


def _record(tanh_mlp, toy_data, opt_fn, *, steps=4, hook=None, **kw):
    torch.manual_seed(0)
    model = tanh_mlp()
    opt = opt_fn(model.parameters())
    if hook is not None:
        hook(model, opt)
    rec = TrajectoryRecorder(model, opt, num_examples=12, **kw)
    X, y = toy_data()
    for s in range(steps):
        idx = torch.arange(3 * s, 3 * s + 3)
        rec.step(X[idx], y[idx], idx)
    return rec.trajectory


def _sgd(p):
    return torch.optim.SGD(p, lr=0.5, momentum=0.9)


def test_parameter_gradient_hook_is_refused(tanh_mlp, toy_data):
    def hook(model, _opt):
        model[0].weight.register_hook(lambda g: 1.5 * g)

    with pytest.raises(RuntimeError, match=r"step 0.*'0.weight' is not the gradient of the rec"):
        _record(tanh_mlp, toy_data, _sgd, hook=hook)


@pytest.mark.parametrize("edit", ["value", "per_element"])
def test_step_pre_hook_that_edits_gradients_per_element_is_refused(tanh_mlp, toy_data, edit):
    def hook(model, opt):
        def pre(_o, _a, _k):
            if edit == "value":
                torch.nn.utils.clip_grad_value_(model.parameters(), 1e-3)
            else:
                for p in model.parameters():
                    p.grad[..., :1].mul_(0.5)

        opt.register_step_pre_hook(pre)

    with pytest.raises(RuntimeError, match="per element.*clip_grad_norm_"):
        _record(tanh_mlp, toy_data, _sgd, hook=hook)


@pytest.mark.parametrize("opt_name", ["sgd", "momentum", "adamw"])
@pytest.mark.parametrize("where", ["pre_hook", "argument"])
def test_norm_clipping_is_recorded_and_exact(tanh_mlp, toy_data, x_test, opt_name, where):
    opt_fn = {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.5),
        "momentum": _sgd,
        "adamw": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
    }[opt_name]
    max_norm, seen = 0.05, []

    def hook(model, opt):
        def pre(_o, _a, _k):
            total = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            seen.append(min(1.0, max_norm / (float(total) + 1e-6)))

        if where == "pre_hook":
            opt.register_step_pre_hook(pre)
        else:  # the recorder clips itself (max_grad_norm=)
            pass

    kw = {"max_grad_norm": max_norm} if where == "argument" else {}
    traj = _record(tanh_mlp, toy_data, opt_fn, hook=hook, **kw)
    scales = [traj.step(s).grad_scale for s in range(traj.num_steps)]
    assert all(s < 0.9 for s in scales)  # every step was clipped
    if where == "pre_hook":
        assert scales == pytest.approx(seen, rel=1e-12)
    epk = ExactPathKernel(traj)
    rep = epk.verify(x_test, attributions=True)
    assert rep.passed and rep.max_unexplained < 1e-13
    ref = reference_path_decomposition(traj, x_test, nodes=8)
    err = (rep.details.attributions - ref.attributions).abs().max()
    assert float(err / ref.attributions.abs().max()) < 1e-10


def test_post_step_weight_clamp_without_update_checks_fails_verify(tanh_mlp, toy_data, x_test):
    def hook(model, opt):
        def clamp(_o, _a, _k):
            with torch.no_grad():
                model[0].weight.clamp_(-0.3, 0.3)

        opt.register_step_post_hook(clamp)

    with pytest.raises(RuntimeError, match="deviates from the recorded update law"):
        _record(tanh_mlp, toy_data, _sgd, hook=hook)
    traj = _record(tanh_mlp, toy_data, _sgd, hook=hook, check_updates=False)
    epk = ExactPathKernel(traj)
    with pytest.raises(EPKVerificationError, match=r"do not explain step\(s\) 0") as info:
        epk.verify(x_test)
    rep = info.value.report
    assert rep.unexplained_steps and rep.max_unexplained > 1e-3 and not rep.passed
    assert rep.step_unexplained.shape == (traj.num_steps,)
    with pytest.warns(UserWarning, match="recorded loss gradients do not explain"):
        epk.attributions(x_test)
    # prediction still equals the network (the residual term absorbs the clamp): the old
    # check could not see it
    assert rep.max_rel_error < 1e-12


def test_honest_runs_have_round_off_residuals(train, x_test, opt_name):
    rep = ExactPathKernel(train(opt_name)).verify(x_test)
    assert rep.passed and rep.max_unexplained < 1e-13


def test_fit_forwards_max_grad_norm(tanh_mlp, toy_data):
    model = tanh_mlp()
    X, y = toy_data()
    traj = fit(model, X, y, optimizer=torch.optim.SGD(model.parameters(), lr=0.3), epochs=1,
               batch_size=6, max_grad_norm=1e-2)  # fmt: skip
    assert all(traj.step(s).grad_scale < 1.0 for s in range(traj.num_steps))
    with pytest.raises(ValueError, match="max_grad_norm must be"):
        fit(model, X, y, optimizer=torch.optim.SGD(model.parameters(), lr=0.3), epochs=1,
            batch_size=6, max_grad_norm=0.0)  # fmt: skip


def test_gradient_removed_by_a_pre_hook_is_refused(tanh_mlp, toy_data):
    def hook(model, opt):
        def pre(_o, _a, _k):
            model[2].bias.grad = None

        opt.register_step_pre_hook(pre)

    with pytest.raises(RuntimeError, match="gradient of '2.bias' was removed"):
        _record(tanh_mlp, toy_data, _sgd, hook=hook)
