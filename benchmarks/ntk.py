"""Empirical NTK: kernelens against the torch.func recipes, in one process.

1. Full NTK ``[N, N, O, O]`` of an MLP 784-512-512-10, N = 48, float32: kernelens
   (``method="auto"``) vs the two recipes of the torch.func NTK tutorial: Jacobian
   contraction (vmap(jacrev) per example, einsum over parameters) and NTK-vector products
   (vjp then jvp for every output basis vector, vmapped over example pairs). Achieved
   GFLOP/s (the plan's estimated FLOPs over the time) against torch.matmul's.
2. The same for a small CNN on 28x28 inputs and a two-layer transformer block.
3. Trace NTK ``[N, N]`` time and peak memory (each point in a fresh process) vs N at width
   512 and vs width at N = 1024 (MLP 784-w-w-10, float32).

Run: ``.venv/bin/python -m benchmarks.ntk [--record] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from benchmarks.harness import (
    machine_description,
    markdown_table,
    matmul_gflops,
    record,
    time_call,
)
from kernelens.ntk import empirical_ntk
from kernelens.ntk._autodiff import math_attention


# -- the torch.func tutorial recipes (baselines) --------------------------------------------
def recipe_jacobian_contraction(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor):
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f_single(p, x):
        return functional_call(model, p, (x.unsqueeze(0),)).squeeze(0)

    def jac(x):
        j = vmap(jacrev(f_single), (None, 0))(params, x)
        return [v.flatten(2) for v in j.values()]

    j1, j2 = jac(x1), jac(x2)
    return sum(torch.einsum("Naf,Mbf->NMab", a, b) for a, b in zip(j1, j2))


def recipe_ntk_vector_products(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor):
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f_single(p, x):
        return functional_call(model, p, (x.unsqueeze(0),)).squeeze(0)

    def ntk_pair(a, b):
        def fa(p):
            return f_single(p, a)

        def fb(p):
            return f_single(p, b)

        out, vjp_fn = vjp(fb, params)

        def column(vec):
            (tangent,) = vjp_fn(vec)
            return jvp(fa, (params,), (tangent,))[1]

        basis = torch.eye(out.numel(), dtype=out.dtype).view(out.numel(), -1)
        return vmap(column)(basis).T

    return vmap(vmap(ntk_pair, (None, 0)), (0, None))(x1, x2)


# -- models ------------------------------------------------------------------------------------
def mlp(width: int = 512) -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    )


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
        h = nn.functional.max_pool2d(torch.relu(self.c2(h)), 2)
        return self.fc(h.flatten(1))


class Block(nn.Module):
    """Pre-norm transformer block: MultiheadAttention + MLP, residual connections."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = self.ln1(h)
        h = h + self.attn(a, a, a, need_weights=False)[0]
        return h + self.mlp(self.ln2(h))


class Transformer(nn.Module):
    """Two pre-norm blocks, vocabulary 64, sequence 16, d = 64, 4 heads, mean-pooled."""

    def __init__(self, d: int = 64, heads: int = 4, vocab: int = 64, seq: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.02 * torch.randn(seq, d))
        self.blocks = nn.Sequential(Block(d, heads), Block(d, heads))
        self.head = nn.Linear(d, 10)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.emb(ids) + self.pos).mean(1))


# -- benchmarks --------------------------------------------------------------------------------
def full_ntk_rows(name: str, model: nn.Module, x: torch.Tensor, repeats: int) -> list[list]:
    model = model.eval()
    ours = time_call(lambda: empirical_ntk(model, x), warmup=1, repeats=repeats)
    # the recipes need the decomposed attention kernels (the fused ones have no forward AD)
    with math_attention():
        jac = time_call(lambda: recipe_jacobian_contraction(model, x, x), warmup=0, repeats=1)
        ntvp_x = x[:8]
        ntvp = time_call(
            lambda: recipe_ntk_vector_products(model, ntvp_x, ntvp_x), warmup=0, repeats=1
        )
    # the vjp/jvp recipe costs one vjp+jvp per (pair, output): scale from N = 8 to N
    ntvp_scaled = ntvp.median * (x.shape[0] / 8) ** 2
    ref = jac.value
    err = float((ours.value - ref).abs().max() / ref.abs().max())
    ntvp_err = float((ours.value[:8, :8] - ntvp.value).abs().max() / ntvp.value.abs().max())
    flops = _executed_flops(lambda: empirical_ntk(model, x))
    gflops = flops / ours.median / 1e9
    return [
        [name, "kernelens empirical_ntk (auto)", ours.median, 1.0, f"{gflops:.1f}", "-"],
        [
            name,
            "torch.func Jacobian contraction",
            jac.median,
            jac.median / ours.median,
            "-",
            f"{err:.1e}",
        ],
        [
            name,
            "torch.func NTK-vector products (N=8, x(N/8)^2)",
            ntvp_scaled,
            ntvp_scaled / ours.median,
            "-",
            f"{ntvp_err:.1e}",
        ],
    ]


def neural_tangents_rows(model: nn.Module, x: torch.Tensor, ours_seconds: float) -> list[list]:
    """neural-tangents' empirical NTK (JAX, jit-compiled) of the same MLP and weights.

    Only in the benchmark venv (``make bench-env``); returns no rows when it is missing.
    Each of its implementations is timed after a compiling warm-up call; one that fails with
    the installed JAX (structured derivatives needs a JAX older than numpy 2 allows) gets a
    row saying so.
    """
    try:
        import jax
        import jax.numpy as jnp
        import neural_tangents as nt
    except ImportError:
        return []
    layers = [m for m in model if isinstance(m, nn.Linear)]
    params = [
        (jnp.asarray(m.weight.detach().numpy().T), jnp.asarray(m.bias.detach().numpy()))
        for m in layers
    ]

    def apply_fn(params, xs):
        h = xs
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        return h

    xj = jnp.asarray(x.numpy())
    ref = empirical_ntk(model.eval(), x).numpy()
    rows = []
    for impl in (
        nt.NtkImplementation.JACOBIAN_CONTRACTION,
        nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
        nt.NtkImplementation.STRUCTURED_DERIVATIVES,
    ):
        fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, implementation=impl))
        name = f"neural-tangents {impl.name.lower()} (jit)"
        try:
            t = time_call(lambda fn=fn: fn(xj, None, params).block_until_ready(), repeats=3)
        except Exception as exc:  # an incompatibility of the peer with the installed JAX
            rows.append(["MLP 784-512-512-10", name, "failed", "-", "-", type(exc).__name__])
            continue
        err = float(abs(t.value - ref).max() / abs(ref).max())
        rows.append(
            [
                "MLP 784-512-512-10",
                name,
                t.median,
                t.median / ours_seconds,
                "-",
                f"{err:.1e}",
            ]
        )
    return rows


def _executed_flops(fn) -> float:
    """FLOPs of the matrix products ``fn`` executes (forward, backward, Grams), counted by
    torch's FlopCounterMode in a separate, untimed run."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def trace_point(n: int, width: int) -> dict:
    """One trace-NTK timing in this process (called in a fresh subprocess): a warm-up call
    on 2 examples (torch's lazy imports), then the peak RSS is reset and the call timed."""
    torch.manual_seed(0)
    model = mlp(width).eval()
    x = torch.randn(n, 784)
    empirical_ntk(model, x[:2], output="trace")
    Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark
    base = _status_mib("VmRSS")
    t0 = time.perf_counter()
    k = empirical_ntk(model, x, output="trace")
    dt = time.perf_counter() - t0
    return {
        "n": n,
        "width": width,
        "seconds": dt,
        "peak_mib": _status_mib("VmHWM"),
        "base_mib": base,
        "finite": bool(torch.isfinite(k).all()),
    }


def trace_rows(points: list[tuple[int, int]]) -> list[list]:
    rows = []
    for n, w in points:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.ntk",
                "--trace-point",
                str(n),
                str(w),
                "--threads",
                str(torch.get_num_threads()),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(
            [r["n"], r["width"], r["seconds"], r["peak_mib"], r["peak_mib"] - r["base_mib"]]
        )
    return rows


TITLE = "ntk: empirical NTK vs torch.func recipes"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", action="store_true", help="append the tables to BENCHMARKS.md")
    ap.add_argument("--quick", action="store_true", help="small trace grid")
    ap.add_argument("--trace-point", nargs=2, type=int, metavar=("N", "WIDTH"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.trace_point:
        print(json.dumps(trace_point(*args.trace_point)))
        return
    torch.manual_seed(0)
    n = 48
    rows = []
    m = mlp()
    x = torch.randn(n, 784)
    rows += full_ntk_rows("MLP 784-512-512-10", m, x, repeats=5)
    rows += neural_tangents_rows(m, x, ours_seconds=rows[0][2])
    rows += full_ntk_rows("CNN 2 conv + linear, 28x28", CNN(), torch.randn(n, 1, 28, 28), 3)
    ids = torch.randint(0, 64, (n, 16))
    rows += full_ntk_rows("2-layer transformer (d=64, seq 16)", Transformer(), ids, 3)
    matmul = matmul_gflops(dtype=torch.float32)
    table1 = markdown_table(
        [
            "model",
            "implementation",
            "seconds",
            "x slower than kernelens",
            "GFLOP/s",
            "max rel. diff",
        ],
        rows,
    )
    print(table1)
    print(f"torch.matmul float32: {matmul:.1f} GFLOP/s")
    grid = (
        [(64, 512), (256, 512), (1024, 512), (1024, 128), (1024, 2048)]
        if args.quick
        else [
            (64, 512),
            (256, 512),
            (1024, 512),
            (4096, 512),
            (1024, 128),
            (1024, 2048),
            (1024, 4096),
        ]
    )
    table2 = markdown_table(
        ["N", "width", "seconds", "peak RSS MiB", "peak - before call MiB"], trace_rows(grid)
    )
    print(table2)
    if args.record:
        machine = machine_description()
        body = (
            "Full NTK [N, N, O, O], N = 48, O = 10, float32. The NTK-vector-product recipe is "
            "timed at N = 8 and scaled by (N/8)^2 (its cost is one vjp+jvp per example pair "
            "and output). GFLOP/s = FLOPs of the matrix products kernelens executes (forward, "
            "backward, Grams; counted by torch's FlopCounterMode in an untimed run) over its "
            "time; torch.matmul float32 reaches "
            f"{matmul:.1f} GFLOP/s on this machine with the same thread count. Ratios come "
            "from the same process. neural-tangents (JAX 0.4.30, CPU, jit-compiled, timed after a "
            "compiling call) runs in the benchmark venv, whose torch is the one listed above.\n\n"
            + table1
            + "\n\nTrace NTK [N, N] of MLP 784-w-w-10 (float32, default memory budget), each "
            "point in a fresh process after a warm-up call; peak RSS (VmHWM, reset before the "
            "call) includes the interpreter, torch and the N x N result:\n\n" + table2
        )
        record(TITLE, body, machine=machine)


if __name__ == "__main__":
    main()
