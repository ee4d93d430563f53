"""Recursive Feature Machines: kernelens vs xRFM on the scaling task, and time vs n.

1. The source's scaling task (``y = 5 x1^3 + 10 x2^2 + 2 x3``, ``x ~ N(0, I_d)``,
   n_train = n_test = 1000, three seeds, d = 5 .. 1000): test MSE and fit+predict seconds of
   ``kernelens.rfm.RFMRegressor(standardize=False)`` (xRFM's RFM does not rescale the
   features, and these are standard normal already; otherwise the defaults: Laplace kernel,
   bandwidth 10, ridge 1e-3, 5 iterations, Cholesky) and of xRFM's direct solver ``xrfm.RFM(kernel='l2',
   bandwidth=10, iters=5)`` fitted with ``reg=1e-3`` and its early stopping off (both then
   run 5 metric updates on all 1000 points and keep the last model), same data, same
   process, float64 and float32.
2. Time vs n (1k .. 100k, d = 20) for kernelens' iterative solver (``solver="cg"``:
   conjugate gradients on the tiled Gram with an EigenPro preconditioner, relative residual
   1e-2, one metric update, float32, AGOP on 2000 points), each n in its own subprocess so
   its peak memory is its own, under a 2 GiB memory budget. (A few EigenPro epochs instead
   of CG were tried and give a much worse predictor at this ridge: test MSE 21 vs 2.7 at
   n = 3000.)

Run (the peer is only in the benchmark venv):
``.venv-bench/bin/python -m benchmarks.rfm [--quick] [--record]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

from benchmarks.harness import markdown_table, peak_rss_mb, record
from kernelens.data import rfm_scaling
from kernelens.rfm import RFMRegressor

DTYPES = {"float64": torch.float64, "float32": torch.float32}
#: memory budget of the large-n runs (bytes)
LARGE_N_BUDGET = 2 << 30


def _xrfm_fit_predict(X: torch.Tensor, y: torch.Tensor, Xt: torch.Tensor) -> torch.Tensor:
    from xrfm import RFM

    model = RFM(kernel="l2", bandwidth=10, iters=5, device="cpu", verbose=False)
    model.fit(
        (X, y[:, None]),
        (X, y[:, None]),  # required argument; unused with early stopping off
        reg=1e-3,
        early_stop_rfm=False,
        return_best_params=False,
    )
    return model.predict(Xt)[:, 0]


def _kernelens_fit_predict(
    X: torch.Tensor, y: torch.Tensor, Xt: torch.Tensor, dtype: str
) -> torch.Tensor:
    return RFMRegressor(dtype=dtype, standardize=False).fit(X, y).predict(Xt)


def bench_scaling(dims: list[int], seeds: list[int], n: int) -> list[list[Any]]:
    """Rows ``[d, dtype, MSE kernelens, MSE xRFM, s kernelens, s xRFM, speed-up]``."""
    rows = []
    warm = rfm_scaling(200, 5, seed=99, dtype=torch.float64)  # warm up both code paths
    _kernelens_fit_predict(warm.X_train, warm.y_train, warm.X_test, "float64")
    _xrfm_fit_predict(warm.X_train, warm.y_train, warm.X_test)
    for d in dims:
        for dtype, tdt in DTYPES.items():
            mse: dict[str, list[float]] = {"kernelens": [], "xRFM": []}
            secs: dict[str, list[float]] = {"kernelens": [], "xRFM": []}
            for seed in seeds:
                s = rfm_scaling(n, d, n_test=n, seed=seed, dtype=tdt)
                for name in ("kernelens", "xRFM"):
                    t0 = time.perf_counter()
                    if name == "kernelens":
                        pred = _kernelens_fit_predict(s.X_train, s.y_train, s.X_test, dtype)
                    else:
                        pred = _xrfm_fit_predict(s.X_train, s.y_train, s.X_test)
                    secs[name].append(time.perf_counter() - t0)
                    err = (pred.double() - s.y_test.double()) ** 2
                    mse[name].append(float(err.mean()))
            tk, tx = float(np.median(secs["kernelens"])), float(np.median(secs["xRFM"]))
            rows.append(
                [
                    d,
                    dtype,
                    float(np.mean(mse["kernelens"])),
                    float(np.mean(mse["xRFM"])),
                    tk,
                    tx,
                    tx / tk,
                ]
            )
            print(rows[-1], flush=True)
    return rows


def run_large(n: int, iters: int, tol: float) -> dict[str, Any]:
    """One time-vs-n configuration (runs in a subprocess)."""
    torch.manual_seed(0)
    s = rfm_scaling(n, 20, n_test=2000, seed=0, dtype=torch.float32)
    model = RFMRegressor(
        solver="cg",
        tol=tol,
        iters=iters,
        dtype="float32",
        agop_samples=2000,
        memory_budget=LARGE_N_BUDGET,
        random_state=0,
        standardize=False,
    )
    t0 = time.perf_counter()
    model.fit(s.X_train, s.y_train)
    fit_s = time.perf_counter() - t0
    mse = float(((model.predict(s.X_test) - s.y_test) ** 2).mean())
    return {
        "n": n,
        "fit_s": fit_s,
        "mse": mse,
        "iterations": [h["solver_iterations"] for h in model.history_],
        "converged": all(h["converged"] for h in model.history_),
        "peak_mb": peak_rss_mb(),
    }


def bench_large(sizes: list[int], iters: int, tol: float) -> list[list[Any]]:
    rows = []
    for n in sizes:
        spec = json.dumps({"n": n, "iters": iters, "tol": tol})
        res = subprocess.run(
            [sys.executable, "-m", "benchmarks.rfm", "--one", spec],
            capture_output=True,
            text=True,
            check=True,
        )
        out = json.loads(res.stdout.strip().splitlines()[-1])
        dense_mib = 3 * n * n * 4 / 2**20
        rows.append(
            [
                out["n"],
                out["fit_s"],
                out["mse"],
                "/".join(map(str, out["iterations"])),
                out["converged"],
                out["peak_mb"],
                f"{dense_mib:.0f} MiB",
            ]
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer dimensions, n up to 10k")
    p.add_argument("--record", action="store_true", help="write the results to BENCHMARKS.md")
    p.add_argument("--skip-scaling", action="store_true", help="only the time-vs-n part")
    p.add_argument("--sizes", help="comma-separated n for the time-vs-n part")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        spec = json.loads(args.one)
        print(json.dumps(run_large(spec["n"], spec["iters"], spec["tol"])))
        return
    dims = [5, 20, 100] if args.quick else [5, 10, 20, 50, 100, 200, 500, 1000]
    seeds = [0] if args.quick else [0, 1, 2]
    sizes = [1000, 3000, 10000] if args.quick else [1000, 3000, 10000, 30000, 100000]
    if args.sizes:
        sizes = [int(v) for v in args.sizes.split(",")]
    iters, tol = 1, 1e-2
    parts = []
    if not args.skip_scaling:
        scaling = bench_scaling(dims, seeds, 1000)
        parts.append(
            "Scaling task, n_train = n_test = 1000, mean test MSE over "
            f"{len(seeds)} seed(s), fit+predict seconds (median over seeds); "
            "speed-up = xRFM time / kernelens time:\n\n"
            + markdown_table(
                ["d", "dtype", "MSE kernelens", "MSE xRFM", "s kernelens", "s xRFM", "speed-up"],
                scaling,
            )
        )
    large = bench_large(sizes, iters, tol)
    parts.append(
        f"Time vs n, d = 20, RFMRegressor(solver='cg', tol={tol}, iters={iters}, "
        "dtype='float32', agop_samples=2000, memory_budget=2 GiB, standardize=False), 2000 "
        "test points, one "
        "subprocess per n:\n\n"
        + markdown_table(
            [
                "n",
                "fit s",
                "test MSE",
                "CG iterations per solve",
                "converged",
                "peak RSS MiB",
                "dense Gram + factor would need",
            ],
            large,
        )
    )
    body = "\n\n".join(parts)
    print(body)
    if args.record:
        record("rfm: kernelens vs xRFM, and time vs n", body)


if __name__ == "__main__":
    main()
