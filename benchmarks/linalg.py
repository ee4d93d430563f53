"""Shared linear algebra against scipy and dense baselines.

1. Top-k eigenpairs of a matrix-free Gaussian-kernel operator (n = 4000, k = 10, float64;
   every product recomputes the Gram tiles): lanczos_eigh and randomized_eigh vs
   scipy.sparse.linalg.eigsh (ARPACK) on the same operator, and the dense route (form the
   Gram, torch.linalg.eigvalsh); time, vectors through the operator, eigenvalue error.
2. Kernel ridge system (K + shift I) alpha = Y, Laplace kernel, n = 10000, d = 16, float32,
   2 right-hand sides, matrix-free (tiled, 512 MiB budget): CG without preconditioner, with
   the EigenPro (subsample) and Nystrom preconditioners, a few EigenPro epochs, and the dense
   Cholesky solve as the reference.
3. Large n: solve_kernel_system(solver="cg") at n = 40000 (default) under a 1 GiB budget (the RFM
   use case), peak memory included.
4. Trace estimation error at equal matvecs: Hutch++ vs Hutchinson on a kernel Gram.

Run: ``.venv/bin/python -m benchmarks.linalg [--record] [--quick] [--large N] [--threads T]``
(one torch thread by default: on a shared 2-core machine two threads mostly wait on each
other).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse.linalg as sla
import torch

from benchmarks.harness import markdown_table, peak_rss_mb, record, time_call
from kernelens.kernels import make_kernel
from kernelens.linalg import (
    EigenProPreconditioner,
    LinearOperator,
    NystromPreconditioner,
    conjugate_gradient,
    eigenpro_solve,
    hutchinson_trace,
    hutchpp_trace,
    kernel_operator,
    lanczos_eigh,
    randomized_eigh,
    solve_kernel_system,
)


def _counting(op: LinearOperator) -> tuple[LinearOperator, list[int]]:
    count = [0]

    def mm(V: torch.Tensor) -> torch.Tensor:
        count[0] += V.shape[1]
        return op.matmat(V)

    return LinearOperator(op.shape, mm, dtype=op.dtype, symmetric=True), count


def bench_eigs(n: int, k: int = 10) -> str:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 8, generator=g, dtype=torch.float64)
    kern = make_kernel("gaussian", bandwidth=3.0)
    # matrix-free: every product recomputes the Gram tiles, as for any large kernel / NTK
    op = kernel_operator(kern, X, memory_budget=256 << 20)
    rows = []
    t = time_call(lambda: torch.linalg.eigvalsh(kern(X)), warmup=0, repeats=1)
    ref = t.value.flip(0)[:k].numpy()
    t_dense = t.median
    rows.append(["dense: form the Gram + torch.linalg.eigvalsh", t_dense, "-", 0.0, 1.0])
    counted, count = _counting(op)
    sop = counted.to_scipy()

    def arpack():
        count[0] = 0
        return sla.eigsh(sop, k=k, which="LA", tol=1e-10)[0]

    t = time_call(arpack, warmup=0, repeats=2)
    err = np.abs(np.sort(t.value)[::-1] - ref).max() / ref[0]
    rows.append(["scipy eigsh (ARPACK, tol 1e-10)", t.median, count[0], err, t_dense / t.median])
    for label, fn in [
        ("kernelens lanczos_eigh (tol 1e-10)", lambda o: lanczos_eigh(o, k)[0]),
        ("kernelens lanczos_eigh, block_size=10", lambda o: lanczos_eigh(o, k, block_size=10)[0]),
        ("kernelens randomized_eigh (p=10, q=2)", lambda o: randomized_eigh(o, k)[0]),
    ]:

        def run(fn=fn):
            count[0] = 0
            return fn(counted)

        t = time_call(run, warmup=0, repeats=2)
        err = np.abs(t.value.numpy() - ref).max() / ref[0]
        rows.append([label, t.median, count[0], err, t_dense / t.median])
    return markdown_table(
        [
            "method",
            "seconds",
            "vectors through A",
            "max eigenvalue error / lambda_1",
            "speed-up vs dense",
        ],
        rows,
    )


def bench_kernel_system(n: int, d: int = 16, shift: float = 1e-2, tol: float = 1e-3) -> str:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g)
    Y = torch.stack([torch.sin(X[:, 0]) + X[:, 1] * X[:, 2], X[:, 3] ** 2], 1)
    kern = make_kernel("laplace", bandwidth=float(np.sqrt(d)))
    budget = 512 << 20
    op = kernel_operator(kern, X, memory_budget=budget).shift(shift)
    rows = []

    t0 = time.perf_counter()
    K = kern(X)
    K.diagonal().add_(shift)
    L = torch.linalg.cholesky(K)
    ref = torch.cholesky_solve(Y, L)
    t_chol = time.perf_counter() - t0
    del K, L
    rows.append(["dense Cholesky (forms the Gram)", t_chol, "-", "exact", 0.0, 1.0])

    def err(x: torch.Tensor) -> float:
        return float((x - ref).norm() / ref.norm())

    def cg(precond, label: str, setup_s: float = 0.0) -> None:
        t0 = time.perf_counter()
        res = conjugate_gradient(op, Y, preconditioner=precond, tol=tol, warn=False)
        t = time.perf_counter() - t0 + setup_s
        rows.append([label, t, res.iterations, res.converged, err(res.x), t_chol / t])

    cg(None, "CG, no preconditioner")
    t0 = time.perf_counter()
    P = EigenProPreconditioner(kern, X, 200, shift=shift, memory_budget=budget)
    cg(P, "CG + EigenProPreconditioner(rank 200, 2000 pts)", time.perf_counter() - t0)
    t0 = time.perf_counter()
    Pn = NystromPreconditioner(kernel_operator(kern, X, memory_budget=budget), 200, shift=shift)
    cg(Pn, "CG + NystromPreconditioner(rank 200)", time.perf_counter() - t0)
    t0 = time.perf_counter()
    ep = eigenpro_solve(
        kern, X, Y, shift=shift, max_epochs=5, tol=tol, memory_budget=budget, warn=False
    )
    t = time.perf_counter() - t0
    rows.append(
        [
            f"eigenpro_solve, 5 epochs (batch {ep.batch_size})",
            t,
            ep.epochs,
            ep.converged,
            err(ep.x),
            t_chol / t,
        ]
    )
    return markdown_table(
        [
            "solver",
            "seconds",
            "iterations / epochs",
            f"converged (rel. residual {tol:g})",
            "rel. error vs Cholesky",
            "speed-up",
        ],
        rows,
    )


def bench_large(n: int, d: int = 16, shift: float = 1e-2, tol: float = 1e-3) -> str:
    g = torch.Generator().manual_seed(1)
    X = torch.randn(n, d, generator=g)
    Y = torch.sin(X[:, :2]).contiguous()
    kern = make_kernel("laplace", bandwidth=float(np.sqrt(d)))
    budget = 1 << 30
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    res = solve_kernel_system(
        kern, X, Y, shift=shift, solver="cg", tol=tol, memory_budget=budget, warn=False
    )
    t = time.perf_counter() - t0
    gram_gib = n * n * 4 / 2**30
    return markdown_table(
        [
            "n",
            "route",
            "seconds",
            "CG iterations",
            "converged",
            "max rel. residual",
            "peak RSS MiB (before)",
            "dense Gram would need",
        ],
        [
            [
                n,
                res.solver,
                t,
                res.iterations,
                res.converged,
                float(res.residual_norm.max()),
                f"{peak_rss_mb():.0f} ({rss0:.0f})",
                f"{gram_gib:.1f} GiB",
            ]
        ],
    )


def bench_trace(n: int, seeds: int = 20) -> str:
    g = torch.Generator().manual_seed(2)
    X = torch.randn(n, 8, generator=g, dtype=torch.float64)
    K = make_kernel("gaussian", bandwidth=3.0)(X)
    true = float(K.trace())
    rows = []
    for m in (30, 90, 270):
        eh = np.mean(
            [abs(float(hutchinson_trace(K, m, seed=s)) - true) / true for s in range(seeds)]
        )
        ep = np.mean([abs(float(hutchpp_trace(K, m, seed=s)) - true) / true for s in range(seeds)])
        rows.append([m, eh, ep, eh / ep])
    return markdown_table(
        ["matvecs", "Hutchinson mean rel. error", "Hutch++ mean rel. error", "ratio"], rows
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--record", action="store_true", help="append the results to BENCHMARKS.md")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--large", type=int, default=40_000, help="n of the large-n solve (0: skip)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    n_eig, n_sys, n_tr = (800, 2000, 500) if args.quick else (4000, 10000, 3000)
    sections = [
        (f"Top-10 eigenpairs of a Gaussian-kernel Gram, n = {n_eig}, float64", bench_eigs(n_eig)),
        (
            f"Kernel ridge system, Laplace kernel, n = {n_sys}, d = 16, float32, 2 right-hand sides",
            bench_kernel_system(n_sys),
        ),
        (f"Trace of a Gaussian-kernel Gram, n = {n_tr}: mean over 20 seeds", bench_trace(n_tr)),
    ]
    if args.large:
        sections.append(
            ("Large-n kernel ridge solve under a 1 GiB budget, float32", bench_large(args.large))
        )
    body = "\n\n".join(f"**{title}**\n\n{table}" for title, table in sections)
    print(body)
    if args.record:
        record("linalg: eigensolvers, preconditioned kernel solves, trace estimation", body)


if __name__ == "__main__":
    main()
