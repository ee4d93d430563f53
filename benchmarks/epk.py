"""Exact Path Kernel: kernelens vs explaind (the public EPK implementation) on one trajectory.

Case (issue 4): MLP 784-256-256-10 with tanh, float32, 512 Fashion-MNIST training points,
50 SGD steps of batch 64 (lr 0.05), 100 test points. The network ends in LogSoftmax and is
trained with the per-example NLL loss, the setting explaind's EPK is written for (its training
features are the gradients of the true-class output, i.e. dloss/df = -onehot(y)).

The run is recorded once with kernelens' TrajectoryRecorder; explaind is handed exactly the
same weights, batches and learning rates through its ModelPath / SGDOptimizerPath / DataPath
checkpoint lists, so both explain the same network. Both produce per-example attributions
(explaind with ``keep_kernel_matrices=True``). Errors are ``max |prediction - network| /
max |network|`` on the test points, against the network run in float32 (its own dtype) and,
for kernelens, also against the float64 evaluation of the same float32 weights.

Run: ``.venv-bench/bin/python -m benchmarks.epk [--record] [--steps 50]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness import machine_description, markdown_table, record
from kernelens.data import fashion_mnist
from kernelens.epk import ExactPathKernel, TrajectoryRecorder

LR = 0.05
BATCH = 64


def _model(activation: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(784, 256), activation(), nn.Linear(256, 256), activation(),
        nn.Linear(256, 10), nn.LogSoftmax(dim=-1),
    )  # fmt: skip


def _nll(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.nll_loss(out, y, reduction="none")


def record_run(steps: int, activation: type[nn.Module]):
    data = fashion_mnist(512, 100, flatten=True, dtype=torch.float32)
    model = _model(activation)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    rec = TrajectoryRecorder(model, opt, _nll, num_examples=512)
    gen = torch.Generator().manual_seed(0)
    while rec.num_steps < steps:
        perm = torch.randperm(512, generator=gen)
        for k in range(0, 512, BATCH):
            if rec.num_steps == steps:
                break
            idx = perm[k : k + BATCH]
            rec.step(data.X_train[idx], data.y_train[idx], idx)
    return data, rec.trajectory


def run_kernelens(traj, x, dtype: torch.dtype) -> tuple[float, dict[str, float]]:
    epk = ExactPathKernel(traj, dtype=dtype)
    t0 = time.perf_counter()
    rep = epk.verify(x, attributions=True, strict=False)  # record the figures either way
    elapsed = time.perf_counter() - t0
    assert rep.details.attributions.shape == (x.shape[0], 512, 10)
    return elapsed, {
        "passed": float(rep.passed),
        "err_model_dtype": rep.max_rel_error_model_dtype,
        "err_float64": rep.max_rel_error,
        "evaluations": rep.evaluations,
    }


def run_explaind(traj, data, x: torch.Tensor, midpoints: int) -> tuple[float, float]:
    """explaind's ExactPathKernelModel on the recorded trajectory, ``midpoints`` per step."""
    from explaind.data_paths import DataPath
    from explaind.epk_model import ExactPathKernelModel
    from explaind.model_paths import ModelPath
    from explaind.modulo_model.loss import RegularizedCrossEntropyLoss
    from explaind.optimizer_paths import SGDOptimizerPath

    S = traj.num_steps
    model = _model(type(traj.model[1]))
    states = [{k: v.clone() for k, v in traj.state(s).items()} for s in range(S + 1)]
    with contextlib.redirect_stdout(io.StringIO()):
        mpath = ModelPath(model, device="cpu", checkpoints=states, output_dim=10)
        opath = SGDOptimizerPath(
            mpath, lr=LR, weight_decay=0.0, momentum=0.0, device="cpu",
            checkpoints=[{"lr": traj.step(min(s, S - 1)).hyper[0]["lr"], "weight_decay": 0.0}
                         for s in range(S + 1)],
        )  # fmt: skip

        class Indexed(torch.utils.data.Dataset):
            """explaind's DataPath only reads ``dataset.targets`` and ``len(dataset)``."""

            def __init__(self) -> None:
                self.targets = list(data.y_train[:512])

            def __len__(self) -> int:
                return 512

        dpath = DataPath(torch.utils.data.DataLoader(Indexed()), full_batch=False, overwrite=True)
        for s in range(S):
            rec = traj.step(s)
            dpath.log_batch(rec.inputs, rec.targets, rec.indices)
        eps = 1 if midpoints == 1 else 1.0 / midpoints  # explaind needs the int 1 here
        epk = ExactPathKernelModel(
            mpath, opath, RegularizedCrossEntropyLoss(alpha=0.0), dpath, integral_eps=eps,
            early_integral_eps=eps, evaluate_predictions=False, device="cpu",
        )  # fmt: skip
        # explaind 0.1.0 stores per-step kernels into ``prev_eval`` before creating it unless
        # evaluate_predictions / keep_param_wise_kernel (51 GB here) are on; start it as {}.
        step_fn = epk.exact_path_kernel_step_test

        def step_with_dict(*a, prev_eval=None, **kw):
            return step_fn(*a, prev_eval={} if prev_eval is None else prev_eval, **kw)

        epk.exact_path_kernel_step_test = step_with_dict
        t0 = time.perf_counter()
        pred, _, kernels, _, _ = epk.predict(x, keep_kernel_matrices=True)
        elapsed = time.perf_counter() - t0
    assert kernels is not None
    with torch.no_grad():
        net = torch.func.functional_call(traj.model, traj.state(S), (x,))
    err = float((pred.detach() - net).abs().max() / net.abs().max())
    return elapsed, err


OPTIMIZERS = {
    "SGD": lambda p: torch.optim.SGD(p, lr=0.1),
    "SGD momentum 0.9": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "SGD Nesterov 0.9": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "Adam": lambda p: torch.optim.Adam(p, lr=1e-3),
    "AdamW": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01),
}


def optimizer_comparison(record_it: bool) -> None:
    """Issue 14's case: attributions for 10 test points after 4 steps of batch 64 on
    Fashion-MNIST, MLP 784-64-64-10 (tanh, float32), one run per optimizer from the same
    initial weights and batches; interleaved repeats, median of 3."""
    data = fashion_mnist(256, 10, flatten=True, dtype=torch.float32)
    x = data.X_test[:10]
    trajs = {}
    for name, make in OPTIMIZERS.items():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(784, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                              nn.Linear(64, 10))  # fmt: skip
        rec = TrajectoryRecorder(model, make(model.parameters()), num_examples=256)
        for s in range(4):
            idx = torch.arange(64 * s, 64 * (s + 1))
            rec.step(data.X_train[idx], data.y_train[idx], idx)
        trajs[name] = rec.trajectory
    cases = [(n, "auto") for n in OPTIMIZERS] + [
        ("SGD momentum 0.9", "backward"), ("SGD Nesterov 0.9", "backward")
    ]  # fmt: skip
    times: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
    schedules = {}
    for _ in range(3):  # interleaved
        for name, sched in cases:
            epk = ExactPathKernel(trajs[name], schedule=sched)
            schedules[(name, sched)] = epk.schedule
            t0 = time.perf_counter()
            epk.attributions(x)
            times[(name, sched)].append(time.perf_counter() - t0)
    med = {c: sorted(v)[1] for c, v in times.items()}
    base = med[("SGD", "auto")]
    rows = [[name, schedules[(name, sched)], med[(name, sched)], f"{med[(name, sched)] / base:.2f}x"]
            for name, sched in cases]  # fmt: skip
    table = markdown_table(["optimizer", "schedule", "seconds", "vs SGD"], rows)
    print(table)
    if record_it:
        body = (
            "Per-example attributions [10, 256, 10] after 4 steps (batch 64) of MLP 784-64-64-10 "
            "(tanh, float32) on Fashion-MNIST, one run per optimizer from the same weights and "
            "batches, computed in float64; median of 3 interleaved repeats, one thread. Measured "
            "under load (other jobs on the machine; the load average is in the machine line): "
            "ratios are meaningful, absolute times are not.\n\n" + table
        )
        record("epk: optimizers on the same run", body, machine=machine_description())


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", action="store_true", help="append the table to BENCHMARKS.md")
    ap.add_argument("--optimizers", action="store_true",
                    help="only the SGD / momentum / Adam comparison (issue 14)")  # fmt: skip
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--midpoints", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--skip-explaind", action="store_true")
    args = ap.parse_args()
    if args.optimizers:
        optimizer_comparison(args.record)
        return

    rows = []
    data, traj = record_run(args.steps, nn.Tanh)
    x = data.X_test[:100]
    ours = {}
    for dtype in (torch.float64, torch.float32):
        ours[dtype] = run_kernelens(traj, x, dtype)
    fastest = None
    for m in [] if args.skip_explaind else args.midpoints:
        t, err = run_explaind(traj, data, x, m)
        fastest = (t, err) if fastest is None or t < fastest[0] else fastest
        rows.append([f"explaind, {m} midpoint(s)/step (float32)", t, err, "-", "-", "-"])
    for dtype, (t, info) in ours.items():
        name = "float64" if dtype == torch.float64 else "float32"
        speed = f"{fastest[0] / t:.0f}x" if fastest else "-"
        gain = f"{fastest[1] / max(info['err_model_dtype'], 1e-300):.0f}x" if fastest else "-"
        rows.append([f"kernelens ExactPathKernel (compute {name}, adaptive Gauss-Legendre)",
                     t, info["err_model_dtype"], info["err_float64"], speed, gain])  # fmt: skip
    columns = ["method", "seconds", "rel. error vs float32 network",
               "rel. error vs float64 eval.", "speed-up vs explaind fastest",
               "error reduction vs explaind fastest"]  # fmt: skip
    table = markdown_table(columns, rows)
    print(table)
    if args.record:
        body = (
            f"MLP 784-256-256-10 (tanh, LogSoftmax), float32 weights, 512 Fashion-MNIST training "
            f"points, {traj.num_steps} SGD steps (lr {LR}, batch {BATCH}), 100 test points, "
            "per-example attributions [100, 512, 10] from both. Same recorded trajectory for "
            "both; times exclude training. Other jobs were running on the machine.\n\n" + table
        )
        record("epk: Exact Path Kernel vs explaind", body, machine=machine_description())


if __name__ == "__main__":
    main()
