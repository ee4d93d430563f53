"""Kernel ridge regression and tiled Gram products against their baselines.

1. KernelRidge fit+predict vs scikit-learn's KernelRidge, n = 5000, d = 64, Gaussian kernel,
   float64 (same kernel, same ridge), plus kernelens in float32.
2. Tiled Gram matvec (never forming the Gram) vs forming the dense Gram and multiplying,
   n = 20000, d = 64, Laplace kernel, float32.

Run: ``.venv/bin/python -m benchmarks.kernels [--record]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.kernel_ridge import KernelRidge as SkKRR

from benchmarks.harness import markdown_table, record, time_call
from kernelens.kernels import KernelRidge, make_kernel


def bench_krr(n: int = 5000, d: int = 64, n_test: int = 1000) -> list[list[object]]:
    g = np.random.default_rng(0)
    X = g.normal(size=(n, d))
    y = np.sin(X[:, 0]) + 0.1 * g.normal(size=n)
    Xt = g.normal(size=(n_test, d))
    L, alpha = float(np.sqrt(d)), 1e-3

    def ours(dtype: str) -> np.ndarray:
        return KernelRidge("gaussian", bandwidth=L, alpha=alpha, dtype=dtype).fit(X, y).predict(Xt)

    def sk() -> np.ndarray:
        return SkKRR(kernel="rbf", gamma=1 / (2 * L**2), alpha=alpha).fit(X, y).predict(Xt)

    t_sk = time_call(sk, warmup=1, repeats=3)
    t64 = time_call(lambda: ours("float64"), warmup=1, repeats=3)
    t32 = time_call(lambda: ours("float32"), warmup=1, repeats=3)
    err64 = float(np.abs(t64.value - t_sk.value).max() / np.abs(t_sk.value).max())
    err32 = float(np.abs(t32.value - t_sk.value).max() / np.abs(t_sk.value).max())
    return [
        ["scikit-learn KernelRidge (float64)", t_sk.median, 1.0, "reference"],
        ["kernelens KernelRidge (float64)", t64.median, t_sk.median / t64.median, f"{err64:.1e}"],
        ["kernelens KernelRidge (float32)", t32.median, t_sk.median / t32.median, f"{err32:.1e}"],
    ]


def bench_matvec(n: int = 20000, d: int = 64, k: int = 4) -> list[list[object]]:
    torch.manual_seed(0)
    X = torch.randn(n, d)
    V = torch.randn(n, k)
    kern = make_kernel("laplace", bandwidth=float(np.sqrt(d)))
    budget = 256 << 20
    t_tiled = time_call(lambda: kern.matvec(X, None, V, memory_budget=budget), warmup=1, repeats=3)
    t_dense = time_call(lambda: kern(X) @ V, warmup=1, repeats=3)
    gram_mib = n * n * X.element_size() / 2**20
    err = float((t_tiled.value - t_dense.value).abs().max() / t_dense.value.abs().max())
    return [
        [
            "dense Gram then matmul",
            t_dense.median,
            1.0,
            f"forms the {gram_mib:.0f} MiB Gram",
            "reference",
        ],
        [
            "tiled matvec (256 MiB budget)",
            t_tiled.median,
            t_dense.median / t_tiled.median,
            f"tiles within {budget >> 20} MiB",
            f"{err:.1e}",
        ],
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--record", action="store_true", help="append the results to BENCHMARKS.md")
    args = p.parse_args()
    krr = markdown_table(
        ["method", "fit+predict s (median of 3)", "speed-up vs sklearn", "max rel. diff"],
        bench_krr(),
    )
    mv = markdown_table(
        ["method", "s (median of 3)", "speed-up vs dense", "memory", "max rel. diff"],
        bench_matvec(),
    )
    body = (
        "KernelRidge fit+predict, n = 5000 train, 1000 test, d = 64, Gaussian kernel:\n\n"
        + krr
        + "\n\nLaplace Gram times a [n, 4] block, n = 20000, d = 64, float32:\n\n"
        + mv
    )
    print(body)
    if args.record:
        record("kernels: KernelRidge and tiled Gram matvec", body)


if __name__ == "__main__":
    main()
