"""kernelens.dynamics.gradient_descent_mse against neural-tangents 0.6.5's
``predict.gradient_descent_mse`` on the same kernels, float64, one thread each.

For each N, an ``[N, N]`` PSD kernel, a ``[N/2, N]`` test kernel and targets ``[N, 10]`` are
drawn once (numpy, seeded) and saved; kernelens runs in this process, neural-tangents in a
subprocess of the peer venv (``/work/.venv-nt`` or ``$NT_PYTHON``) on the same arrays. Timed:
building the predictor and predicting train and test outputs at 10 times plus ``t = None``
(each call includes the eigendecomposition / Cholesky factorisation, as a first call does),
median of 3 after a warm-up, in interleaved rounds. The outputs are compared (max relative
difference).

Run: ``/work/main/.venv/bin/python -m benchmarks.dynamics [--record] [--quick]``. This file
imports torch and kernelens only in the kernelens process; ``--peer`` runs the JAX side.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

TIMES = np.array([1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 1e5])
PEER_PYTHON = os.environ.get("NT_PYTHON", "/work/.venv-nt/bin/python")
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
TITLE = "dynamics: gradient_descent_mse vs neural-tangents predict"
#: Interleaved rounds (kernelens, then neural-tangents) per size.
ROUNDS = 3


def make_problem(n: int, path: Path) -> None:
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n + n // 2, n + n // 2 + 8))
    k = a @ a.T / a.shape[1]
    np.savez(
        path,
        k_dd=k[:n, :n],
        k_td=k[n:, :n],
        y=rng.standard_normal((n, 10)),
        f0=rng.standard_normal((n, 10)) * 0.1,
        g0=rng.standard_normal((n // 2, 10)) * 0.1,
    )


def _median_time(fn, repeats: int = 3):
    fn()
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def peer(path: str, out: str) -> None:
    """The neural-tangents side (run in the peer venv)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import neural_tangents as nt

    d = np.load(path)
    k_dd, k_td, y, f0, g0 = (jax.numpy.asarray(d[k]) for k in ("k_dd", "k_td", "y", "f0", "g0"))

    def run():
        p = nt.predict.gradient_descent_mse(k_dd, y, learning_rate=1.0, diag_reg=1e-6)
        tr, te = p(TIMES, f0, g0, k_td)
        tri, tei = p(None, f0, g0, k_td)
        return [np.asarray(v.block_until_ready()) for v in (tr, te, tri, tei)]

    sec, res = _median_time(run)
    np.savez(out, seconds=sec, tr=res[0], te=res[1], tri=res[2], tei=res[3])


def ours(path: Path):
    import torch

    from kernelens.dynamics import gradient_descent_mse

    d = np.load(path)
    k_dd, k_td, y, f0, g0 = (torch.from_numpy(d[k]) for k in ("k_dd", "k_td", "y", "f0", "g0"))
    t = torch.from_numpy(TIMES)

    def run():
        p = gradient_descent_mse(k_dd, y, learning_rate=1.0, diag_reg=1e-6)
        tr, te = p(t, f0, g0, k_td)
        tri, tei = p(None, f0, g0, k_td)
        return [v.numpy() for v in (tr, te, tri, tei)]

    return _median_time(run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", action="store_true", help="write the table to BENCHMARKS.md")
    ap.add_argument("--quick", action="store_true", help="small sizes only")
    ap.add_argument("--peer", nargs=2, metavar=("PROBLEM", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        peer(*args.peer)
        return
    import torch

    from benchmarks.harness import machine_description, markdown_table, record

    torch.set_num_threads(1)
    sizes = (256, 512) if args.quick else (256, 1024, 2048)
    rows = []
    machine = machine_description()
    env = {**os.environ, "XLA_FLAGS": ONE_THREAD, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            prob, out = Path(tmp) / f"p{n}.npz", Path(tmp) / f"o{n}.npz"
            make_problem(n, prob)
            mine_s, peer_s = [], []
            for _ in range(ROUNDS):  # interleaved, so both see the same load
                sec, mine = ours(prob)
                subprocess.run(
                    [PEER_PYTHON, str(Path(__file__).resolve()), "--peer", str(prob), str(out)],
                    check=True,
                    env=env,
                    capture_output=True,
                )
                theirs = np.load(out)
                mine_s.append(sec)
                peer_s.append(float(theirs["seconds"]))
            diff = max(
                float(np.abs(a - theirs[k]).max() / np.abs(theirs[k]).max())
                for a, k in zip(mine, ("tr", "te", "tri", "tei"))
            )
            sec, nt_sec = float(np.median(mine_s)), float(np.median(peer_s))
            ratios = sorted(q / m for q, m in zip(peer_s, mine_s))
            rows.append([n, sec, nt_sec, nt_sec / sec, f"{ratios[0]:.2f}-{ratios[-1]:.2f}", diff])
    table = markdown_table(
        [
            "N (O = 10, M = N/2)",
            "kernelens s",
            "neural-tangents s",
            "nt / kernelens",
            "per-round ratios",
            "max rel. diff",
        ],
        rows,
    )
    print(table)
    if args.record:
        body = (
            "Measured under load (other helpers share the machine; see the load average "
            "above): absolute seconds are inflated, ratios from the same run are meaningful. "
            "One thread each, float64; predictor build + train/test predictions at 10 times "
            "+ t = None, median of 3 after a warm-up, in 3 interleaved rounds (kernelens, then "
            "neural-tangents in a subprocess of its venv on the same arrays): medians over the "
            "rounds and the range of the per-round ratios.\n\n" + table
        )
        record(TITLE, body, machine=machine)


if __name__ == "__main__":
    main()
