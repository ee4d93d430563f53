"""ExactPathKernel against the independent float64 reference, per example and per kernel entry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kernelens.epk import EPKVerificationError, ExactPathKernel, Trajectory, fit
from kernelens.epk.passes import window_length
from kernelens.epk.reference import reference_path_decomposition


def _per_example_rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max over examples i of max|a[:, i] - ref[:, i]| / max|ref[:, i]| (examples with ref != 0)."""
    err = (a - ref).abs().amax(dim=(0, 2))
    scale = ref.abs().amax(dim=(0, 2))
    used = scale > 0
    assert bool((err[~used] == 0).all()), "examples never in a batch must get exactly zero"
    return float((err[used] / scale[used]).max())


LOG_PROB_CASES = ("sgd_wd", "nesterov", "adamw")


@pytest.mark.parametrize(
    "output",
    ["logits", pytest.param("log_probs", marks=pytest.mark.slow)],
)
def test_attributions_match_reference(train, opt_name, output, x_test):
    _check_against_reference(train(opt_name), opt_name, output, x_test)


@pytest.mark.parametrize("opt_name_", LOG_PROB_CASES)
def test_attributions_match_reference_log_probs(train, opt_name_, x_test):
    _check_against_reference(train(opt_name_), opt_name_, "log_probs", x_test)


def _check_against_reference(traj, opt_name, output, x_test):
    epk = ExactPathKernel(traj, output=output)
    d = epk.decompose(x_test)
    ref = reference_path_decomposition(traj, x_test, output=output, nodes=8)
    assert _per_example_rel(d.attributions, ref.attributions) < 1e-8
    torch.testing.assert_close(d.initial, ref.initial, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(d.network, ref.network, rtol=1e-13, atol=1e-14)
    scale = float(ref.network.abs().max())
    non_example = d.weight_decay + d.residual
    assert float((non_example - ref.non_example).abs().max()) < 1e-10 * scale
    rel = float((d.prediction - d.network).abs().max()) / scale
    assert rel < 1e-10
    if opt_name in ("sgd", "sgd_wd"):
        assert epk.schedule == "factored"
    elif opt_name in ("adam", "adam_l2", "adamw", "amsgrad"):
        assert epk.schedule == "backward"
    if opt_name in ("sgd", "adam", "dampening"):
        assert float(d.weight_decay.abs().max()) == 0.0
    else:
        assert float(d.weight_decay.abs().max()) > 1e-6


def test_mse_loss(train, x_test):
    traj = train("momentum", loss="mse")
    epk = ExactPathKernel(traj)
    ref = reference_path_decomposition(traj, x_test, nodes=8)
    assert _per_example_rel(epk.attributions(x_test), ref.attributions) < 1e-8
    assert epk.verify(x_test).max_rel_error < 1e-10
    assert not epk.single_kernel_machine
    with pytest.raises(ValueError, match="output='log_probs' needs.*cross_entropy"):
        ExactPathKernel(traj, output="log_probs")


@pytest.mark.parametrize("opt_name_", ["sgd_wd", "adamw"])
def test_kernel_values_match_reference(train, x_test, opt_name_):
    traj = train(opt_name_, epochs=1)
    epk = ExactPathKernel(traj, output="log_probs")
    K = epk.kernel(x_test)  # [T, N, O, O]
    per_step = epk.kernel(x_test, steps=[0, 2])  # [2, T, N, O, O]
    assert K.shape == (3, 12, 3, 3) and per_step.shape == (2, 3, 12, 3, 3)
    torch.testing.assert_close(epk.kernel(x_test, steps=2), per_step[1])
    for a in range(3):
        ref = reference_path_decomposition(traj, x_test, output="log_probs", cotangent=a, nodes=8)
        assert _per_example_rel(K[..., a], ref.attributions) < 1e-8
        ref2 = reference_path_decomposition(
            traj, x_test, output="log_probs", cotangent=a, steps=[2], nodes=8
        )
        assert _per_example_rel(per_step[1][..., a], ref2.attributions) < 1e-8


def test_single_kernel_machine_in_log_prob_view(train, toy_data, x_test):
    traj = train("nesterov")
    epk = ExactPathKernel(traj, output="log_probs")
    assert epk.single_kernel_machine
    alpha = epk.kernel_machine_weights()  # -dloss/df = onehot(y)
    _, y = toy_data()
    torch.testing.assert_close(alpha, torch.nn.functional.one_hot(y, 3).double())
    d = epk.decompose(x_test, kernel_steps="sum")
    machine = d.initial + torch.einsum("tnoa,na->to", d.kernel, alpha) + d.weight_decay + d.residual
    assert float((machine - d.network).abs().max() / d.network.abs().max()) < 1e-10
    # logits view of cross-entropy: dL/df = softmax - onehot changes every step
    assert not ExactPathKernel(traj).single_kernel_machine


def test_tiles_and_disk_streaming_give_the_same_numbers(train, x_test, tmp_path):
    traj = train("adam_l2")
    full = ExactPathKernel(traj).decompose(x_test, kernel_steps=[1])
    loaded = Trajectory.load(traj.save(tmp_path / "run", shard_bytes=3000), traj.model)
    tiled = ExactPathKernel(loaded, memory_budget=1).decompose(x_test, kernel_steps=[1])
    for name in ("attributions", "kernel", "prediction", "weight_decay", "quadrature_residual"):
        torch.testing.assert_close(
            getattr(tiled, name), getattr(full, name), rtol=1e-13, atol=1e-15
        )
    summed_only = ExactPathKernel(traj).decompose(x_test, attributions=False)
    assert summed_only.attributions is None
    torch.testing.assert_close(summed_only.prediction, full.prediction, rtol=1e-13, atol=1e-15)
    structured = ExactPathKernel(train("sgd_wd"))
    with_attr = structured.decompose(x_test)
    torch.testing.assert_close(
        structured.predict(x_test), with_attr.prediction, rtol=1e-13, atol=1e-15
    )
    torch.testing.assert_close(with_attr.attributions.sum(1), with_attr.example_total)


def test_float32_training(tanh_mlp, toy_data, x_test):
    torch.manual_seed(0)
    model = tanh_mlp().float()
    X, y = toy_data()
    traj = fit(model, X.float(), y, optimizer=torch.optim.SGD(model.parameters(), lr=0.3,
               momentum=0.9), epochs=3, batch_size=4)  # fmt: skip
    epk = ExactPathKernel(traj)
    rep = epk.verify(x_test.float())
    assert rep.passed and 0 < rep.max_unexplained < 1e-4  # float32 rounding of the steps
    assert rep.max_rel_error < 1e-12  # against the float64 evaluation of the float32 weights
    assert rep.max_rel_error_model_dtype < 1e-5  # float32's own rounding of the forward pass
    d = rep.details
    assert float(d.residual.abs().max()) > 0  # float32 rounding of the steps, made explicit
    ref = reference_path_decomposition(traj, x_test, nodes=8)
    assert _per_example_rel(d.attributions if d.attributions is not None
                            else epk.attributions(x_test), ref.attributions) < 1e-8  # fmt: skip


def test_midpoint_rule_is_less_accurate_and_warns(train, x_test):
    traj = train("sgd")
    midpoint = ExactPathKernel(traj, nodes=1, rule="midpoint")
    with pytest.warns(UserWarning, match=r"quadrature missed rtol=1e-12 at step\(s\) 0, 1"):
        midpoint.decompose(x_test)
    mid = midpoint.verify(x_test, strict=False)  # the report is the word: no warning
    gl = ExactPathKernel(traj, nodes=3).verify(x_test, strict=False)
    assert gl.max_rel_error < 1e-3 * mid.max_rel_error
    assert mid.unconverged > 0 and 0 <= mid.worst_step < traj.num_steps and not mid.passed
    with pytest.raises(EPKVerificationError, match="quadrature missed") as info:
        ExactPathKernel(traj, nodes=1, rule="midpoint").verify(x_test)
    assert info.value.report.unconverged == mid.unconverged


def test_verify_model_dtype_error_compares_the_same_output_view(train, x_test):
    """Both views against the model evaluated in its own dtype (float64 here): round-off."""
    traj = train("adamw")
    for output in ("logits", "log_probs"):
        rep = ExactPathKernel(traj, output=output).verify(x_test)
        assert rep.max_rel_error_model_dtype < 1e-12 and rep.passed


def test_bad_inputs(train, x_test):
    traj = train("sgd")
    epk = ExactPathKernel(traj)
    with pytest.raises(ValueError, match=r"x_test must have shape \[T, 2\]"):
        epk.predict(torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="x_test must be floating"):
        epk.predict(torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="NaN or Inf"):
        epk.predict(torch.full((1, 2), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="empty"):
        epk.predict(torch.zeros(0, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"steps must be step numbers in \[0, 6\)"):
        epk.kernel(x_test, steps=[6])
    with pytest.raises(TypeError, match=r"kernelens.epk.Trajectory, got a trained model.*epk.fit"):
        ExactPathKernel(traj.model)
    with pytest.raises(TypeError, match="got str.*record the training run"):
        ExactPathKernel("run.pt")
    with pytest.raises(ValueError, match="unknown output"):
        ExactPathKernel(traj, output="probs")
    with pytest.raises(TypeError, match="nodes must be an integer"):
        ExactPathKernel(traj, nodes="many")


def test_model_changed_after_recording(train, tmp_path):
    traj = train("sgd")
    path = traj.save(tmp_path / "run")
    changed = nn.Sequential(nn.Linear(2, 6), nn.Sigmoid(), nn.Linear(6, 3)).double()
    loaded = Trajectory.load(path, changed)  # same names and shapes: loads fine
    with pytest.raises(ValueError, match="model changed after recording"):
        ExactPathKernel(loaded)
    traj.model.add_module("extra", nn.Linear(3, 3).double())
    with pytest.raises(ValueError, match="different model.*extra"):
        ExactPathKernel(traj)


@pytest.mark.parametrize("opt_name_", ["momentum", "dampening", "nesterov"])
def test_factored_momentum_schedule_matches_reference_and_backward(train, x_test, opt_name_):
    traj = train(opt_name_)
    fac = ExactPathKernel(traj, schedule="factored", output="log_probs")
    back = ExactPathKernel(traj, schedule="backward", output="log_probs")
    assert fac.schedule == "factored" and back.schedule == "backward"
    d1 = fac.decompose(x_test, kernel_steps=[0, 4])
    d2 = back.decompose(x_test, kernel_steps=[0, 4])
    for name in ("attributions", "kernel", "prediction", "weight_decay"):
        torch.testing.assert_close(getattr(d1, name), getattr(d2, name), rtol=1e-13, atol=1e-15)
    ref = reference_path_decomposition(traj, x_test, output="log_probs", nodes=8)
    assert _per_example_rel(d1.attributions, ref.attributions) < 1e-8


def test_factored_window_is_truncated_at_round_off(tanh_mlp, toy_data, x_test):
    torch.manual_seed(0)
    model = tanh_mlp()
    X, y = toy_data()
    traj = fit(model, X, y, optimizer=torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.1),
               epochs=4, batch_size=2)  # fmt: skip
    mean, longest = window_length([traj.step_rules(s) for s in range(traj.num_steps)], True)
    assert (
        traj.num_steps == 24 and longest == 19 and mean < longest
    )  # 0.1^18 < 2^-60: older batches dropped
    d1 = ExactPathKernel(traj, schedule="factored").decompose(x_test)
    d2 = ExactPathKernel(traj, schedule="backward").decompose(x_test)
    torch.testing.assert_close(d1.attributions, d2.attributions, rtol=1e-13, atol=1e-16)


def test_factored_schedule_needs_scalar_coefficients(train):
    with pytest.raises(ValueError, match="schedule='factored' needs .* Adam"):
        ExactPathKernel(train("adam"), schedule="factored")
    with pytest.raises(ValueError, match="unknown schedule"):
        ExactPathKernel(train("sgd"), schedule="fast")
    sgd = train("sgd")
    assert ExactPathKernel(sgd).schedule == "factored"  # plain SGD: always factored
    back = ExactPathKernel(sgd, schedule="backward")
    assert back.schedule == "backward"
    x = torch.randn(2, 2, dtype=torch.float64)
    torch.testing.assert_close(back.attributions(x), ExactPathKernel(sgd).attributions(x),
                               rtol=1e-13, atol=1e-16)  # fmt: skip
