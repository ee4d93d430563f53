"""Empirical NTK: kernelens against neural-tangents and the torch.func recipe.

1. Full NTK ``[N, N, O, O]``, float32, at one and at two threads, interleaved rounds, min of
   the calls: an MLP 784-512-512-10 (N = 48) and a CNN (N = 32, 28x28) against
   neural-tangents 0.6.5's structured derivatives and NTK-vector products on the same
   ``stax`` network and weights (``benchmarks/ntk_peer.py``, a subprocess in the peer's own
   venv: jax 0.4.23, under which structured derivatives works), and all three (plus two
   pre-norm ``TransformerEncoderLayer`` blocks) against the Jacobian-contraction recipe of
   the torch.func NTK tutorial. Executed FLOPs (FlopCounterMode) and GFLOP/s of kernelens,
   and the machine's GEMM rate at the MLP's Gram shape.
2. Trace NTK ``[N, N]`` time and peak memory (each point in a fresh process) vs N at width
   512 and vs width at N = 1024 (MLP 784-w-w-10, float32).

Run: ``.venv/bin/python -m benchmarks.ntk [--record] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

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


# -- models ------------------------------------------------------------------------------------
def mlp(width: int = 512) -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    )


class CNN(nn.Module):
    """Conv(32, 3x3, same) - ReLU - Conv(32, 3x3, stride 2) - ReLU - Flatten - Dense(10)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 32, 3, stride=2)
        self.fc = nn.Linear(32 * 13 * 13, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(h.flatten(1))


class Transformer(nn.Module):
    """Two pre-norm blocks, vocabulary 64, sequence 16, d = 64, 4 heads, mean-pooled."""

    def __init__(self, d: int = 64, heads: int = 4, vocab: int = 64, seq: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.02 * torch.randn(seq, d))
        layer = dict(dim_feedforward=2 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.Sequential(
            nn.TransformerEncoderLayer(d, heads, **layer),
            nn.TransformerEncoderLayer(d, heads, **layer),
        )
        self.head = nn.Linear(d, 10)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.emb(ids) + self.pos).mean(1))


# -- benchmarks --------------------------------------------------------------------------------
NT_PYTHON = Path(
    os.environ.get("KERNELENS_NT_PYTHON", Path(__file__).parent.parent / ".venv-nt/bin/python")
)
ONE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def run_peer(arch: str, model: nn.Module, x: torch.Tensor, repeats: int, threads: int) -> dict:
    """neural-tangents on the same network and weights, in its own venv (a subprocess).

    Returns ``{implementation: (min seconds, kernel)}``, or ``{}`` when the peer's Python
    (``KERNELENS_NT_PYTHON``, ``make bench-env`` builds it) is missing.
    """
    if not NT_PYTHON.exists():
        return {}
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    arrays = {"arch": np.array(arch), "x": x.numpy()}
    for i, m in enumerate(layers):
        arrays[f"w{i}"] = m.weight.detach().numpy()
        arrays[f"b{i}"] = m.bias.detach().numpy()
    env = dict(os.environ)
    env["XLA_FLAGS"] = ONE_THREAD_XLA if threads == 1 else ""
    env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in.npz"), Path(tmp, "out.npz")
        np.savez(src, **arrays)
        subprocess.run(
            [str(NT_PYTHON), str(Path(__file__).with_name("ntk_peer.py")), src, dst, str(repeats)],
            env=env,
            capture_output=True,
            check=True,
        )
        out = dict(np.load(dst))
    return {
        k[: -len("_times")]: (
            float(v.min()),
            torch.from_numpy(out[k[: -len("_times")] + "_kernel"]),
        )
        for k, v in out.items()
        if k.endswith("_times")
    }


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref.double()).abs().max() / ref.double().abs().max())


def full_ntk_rows(
    name: str, model: nn.Module, x: torch.Tensor, *, arch: str | None, rounds: int, threads: int
) -> list[list]:
    """kernelens, the torch.func Jacobian recipe and (for ``arch``) neural-tangents, in
    ``rounds`` interleaved rounds; each figure is the min over all its timed calls."""
    model = model.eval()
    ours_t, jac_t, peer_t = [], [], {}
    peer_k = {}
    ours = empirical_ntk(model, x)  # warm-up
    for _ in range(rounds):
        t = time_call(lambda: empirical_ntk(model, x), warmup=0, repeats=3)
        ours_t.append(t.min)
        with math_attention():  # the fused attention kernels have no forward AD
            j = time_call(lambda: recipe_jacobian_contraction(model, x, x), warmup=0, repeats=1)
        jac_t.append(j.min)
        if arch is not None:
            for impl, (sec, k) in run_peer(arch, model, x, 5, threads).items():
                peer_t.setdefault(impl, []).append(sec)
                peer_k[impl] = k
    ours_s, ref = min(ours_t), j.value
    flops = _executed_flops(lambda: empirical_ntk(model, x))
    rows = [
        [
            name,
            "kernelens empirical_ntk (auto)",
            ours_s,
            1.0,
            f"{flops / 1e9:.3f}",
            f"{flops / ours_s / 1e9:.1f}",
            _rel(ours, ref),
        ],
        [name, "torch.func Jacobian contraction", min(jac_t), min(jac_t) / ours_s, "-", "-", "ref"],
    ]
    for impl, secs in peer_t.items():
        rows.append(
            [
                name,
                f"neural-tangents {impl} (stax, jit)",
                min(secs),
                min(secs) / ours_s,
                "-",
                "-",
                _rel(peer_k[impl], ref),
            ]
        )
    return rows


def gemm_rate(m: int, k: int, n: int, repeats: int = 20) -> float:
    """torch.matmul GFLOP/s on ``[m, k] x [k, n]`` float32 (min of ``repeats``)."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    t = time_call(lambda: a @ b, warmup=3, repeats=repeats)
    return 2 * m * k * n / t.min / 1e9


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


TITLE = "ntk: empirical NTK vs neural-tangents and the torch.func recipe"


def full_tables(rounds: int) -> tuple[str, str]:
    """The full-NTK table at one and two threads, and the GEMM-rate lines."""
    rows, gemm_lines = [], []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        cases = [
            ("MLP 784-512-512-10, N=48", mlp(), torch.randn(48, 784), "mlp"),
            (
                "CNN conv32-s1-same, conv32-s2, dense10, N=32, 28x28",
                CNN(),
                torch.randn(32, 1, 28, 28),
                "cnn",
            ),
            (
                "2 pre-norm blocks d=64 (4 heads, ff 128), N=16, T=16",
                Transformer(),
                torch.randint(0, 64, (16, 16)),
                None,
            ),
        ]
        for name, model, x, arch in cases:
            for r in full_ntk_rows(name, model, x, arch=arch, rounds=rounds, threads=threads):
                rows.append([threads, *r])
        g = gemm_rate(480, 512, 480)
        g2 = matmul_gflops(dtype=torch.float32)
        gemm_lines.append(
            f"{threads} thread(s): torch.matmul float32 [480, 512] x [512, 480] (the MLP's Gram "
            f"shape): {g:.1f} GFLOP/s; 2048 x 2048: {g2:.1f} GFLOP/s; the MLP's kernelens rate "
            f"is {_gemm_fraction(rows, threads, g):.0%} of the Gram-shape GEMM rate."
        )
    table = markdown_table(
        [
            "threads",
            "model",
            "implementation",
            "seconds (min)",
            "x kernelens",
            "executed GFLOP",
            "GFLOP/s",
            "max rel. diff vs recipe",
        ],
        rows,
    )
    return table, "\n".join(f"- {line}" for line in gemm_lines)


def _gemm_fraction(rows: list[list], threads: int, gemm: float) -> float:
    r = next(r for r in rows if r[0] == threads and r[1].startswith("MLP") and "kernelens" in r[2])
    return float(r[6]) / gemm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", action="store_true", help="append the tables to BENCHMARKS.md")
    ap.add_argument("--quick", action="store_true", help="small trace grid, fewer rounds")
    ap.add_argument("--trace-point", nargs=2, type=int, metavar=("N", "WIDTH"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.trace_point:
        print(json.dumps(trace_point(*args.trace_point)))
        return
    load_before = os.getloadavg()
    table1, gemm = full_tables(rounds=2 if args.quick else 3)
    print(table1)
    print(gemm)
    torch.set_num_threads(1)
    grid = (
        [(64, 512), (256, 512), (1024, 512)]
        if args.quick
        else [(64, 512), (256, 512), (1024, 512), (4096, 512), (1024, 128), (1024, 2048)]
    )
    table2 = markdown_table(
        ["N", "width", "seconds", "peak RSS MiB", "peak - before call MiB"], trace_rows(grid)
    )
    print(table2)
    if args.record:
        machine = machine_description()
        load_after = os.getloadavg()
        body = (
            f"torch {torch.__version__} for every kernelens and torch.func figure; "
            "neural-tangents 0.6.5 on jax/jaxlib 0.4.23 (numpy 1.26, its own venv, "
            "benchmarks/requirements-nt.txt), the network built with `stax` (standard "
            "parameterisation, the same weights), jit-compiled, timed after a compiling call, "
            "in a subprocess with XLA_FLAGS one-thread flags at 1 thread (XLA's defaults at 2). "
            "Full NTK [N, N, O, O], float32. Each library is run in "
            "interleaved rounds (kernelens 3 calls, the recipe 1, neural-tangents 5 per round); "
            "figures are the min over all calls. Executed GFLOP = FLOPs of the matrix products "
            "kernelens runs (torch's FlopCounterMode, untimed run). Measured under load: load "
            f"average {load_before[0]:.1f} before, {load_after[0]:.1f} after (2 cores shared "
            "with other jobs); quote the ratios, not the seconds.\n\n"
            + table1
            + "\n\nGEMM rate on this machine (same load):\n\n"
            + gemm
            + "\n\nTrace NTK [N, N] of MLP 784-w-w-10 (float32, one thread, default memory "
            "budget), each point in a fresh process after a warm-up call; peak RSS (VmHWM, reset "
            "before the call) includes the interpreter, torch and the N x N result:\n\n" + table2
        )
        record(TITLE, body, machine=machine)


if __name__ == "__main__":
    main()
