"""One CPU thread vs two on small batched workloads (the README's snippets) and on one large
dense solve, interleaved in one process so that the load of the machine hits both equally.

Each workload is timed with ``torch.set_num_threads(1)`` and ``(2)`` alternately (warm-up, then
repeats); the ratio is t(2 threads) / t(1 thread): above 1 means one thread is faster.

Run: ``.venv/bin/python -m benchmarks.threads [--record]``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import torch
from torch import nn

from benchmarks.harness import markdown_table, record, time_call


def _ntk() -> Callable[[], object]:
    import kernelens

    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10)).eval()
    x = torch.randn(48, 784, generator=torch.Generator().manual_seed(0))
    return lambda: kernelens.empirical_ntk(model, x)


def _epk() -> Callable[[], object]:
    import kernelens.epk as epk
    from kernelens.data import two_moons

    m = two_moons(200, n_test=50, dtype=torch.float64)

    def run() -> object:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2)).double()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        traj = epk.fit(
            net,
            m.X_train,
            m.y_train,
            epochs=5,
            batch_size=32,
            loss="cross_entropy",
            optimizer=opt,
            seed=0,
        )
        return epk.ExactPathKernel(traj, output="log_probs").attributions(m.X_test)

    return run


def _rfm() -> Callable[[], object]:
    from kernelens.data import rfm_scaling
    from kernelens.rfm import RFMRegressor

    s = rfm_scaling(1000, 20, seed=0, dtype=torch.float64)
    return lambda: RFMRegressor().fit(s.X_train, s.y_train)


def _dense() -> Callable[[], object]:
    g = torch.Generator().manual_seed(0)
    A = torch.randn(3000, 3000, generator=g, dtype=torch.float64)
    K = A @ A.T + 3000 * torch.eye(3000, dtype=torch.float64)
    return lambda: torch.linalg.cholesky(K)


WORKLOADS = {
    "empirical NTK, MLP 784-512-10, 48 inputs (README)": _ntk,
    "EPK: fit 5 epochs + attributions, two moons (README)": _epk,
    "RFMRegressor fit, n = 1000, d = 20 (README)": _rfm,
    "dense Cholesky, n = 3000, float64": _dense,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", action="store_true", help="append the table to BENCHMARKS.md")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    before = torch.get_num_threads()
    rows = []
    try:
        for name, make in WORKLOADS.items():
            fn = make()
            times: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(args.repeats):
                for n in (1, 2):
                    torch.set_num_threads(n)
                    times[n].append(time_call(fn, warmup=1, repeats=1).median)
            t1, t2 = sorted(times[1])[len(times[1]) // 2], sorted(times[2])[len(times[2]) // 2]
            rows.append([name, f"{t1:.3g}", f"{t2:.3g}", f"{t2 / t1:.2f}"])
            print(rows[-1], flush=True)
    finally:
        torch.set_num_threads(before)
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    table = markdown_table(["workload", "1 thread (s)", "2 threads (s)", "t(2) / t(1)"], rows)
    body = (
        f"Medians of {args.repeats} interleaved runs each; load average after the run "
        f"(1/5/15 min): {load}. Measured under load from other processes on a 2-core machine: "
        "the ratios, not the absolute times, are the result.\n\n" + table
    )
    print(body)
    if args.record:
        record("Threads: one vs two on small batched work", body)


if __name__ == "__main__":
    main()
