"""kernelens.infinite against neural-tangents' stax kernel_fn: time and peak memory.

    python -m benchmarks.infinite [--record] [--scale 0.25] [--nt-memory-limit-gb 8]

Every measurement runs in its own subprocess on one thread, so that peak resident memory
(``ru_maxrss`` minus the resident size after imports and input creation) belongs to that one
computation: kernelens in this venv, neural-tangents 0.6.5 (JAX, jit-compiled, timed after a
warm-up call) in /work/.venv-nt. Cases follow issue 11; ``--scale`` shrinks N for a loaded
machine. The neural-tangents subprocess can be given an address-space limit
(``--nt-memory-limit-gb``) to show where it runs out of memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NT_PYTHON = Path(os.environ.get("KERNELENS_NT_PYTHON", "/work/.venv-nt/bin/python"))
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}

#: name -> (architecture, N, per-example shape NCHW / (d,), repeats, note)
CASES = {
    "mlp3_n1000": ("mlp", 1000, (64,), 3),
    "mlp3_n4000": ("mlp", 4000, (64,), 1),
    "cnn_gap_8x8_n200": ("cnn_gap", 200, (3, 8, 8), 1),
    "cnn_gap_16x16_n100": ("cnn_gap", 100, (3, 16, 16), 1),
    "cnn_flatten_32x32_n200": ("cnn_flatten", 200, (3, 32, 32), 1),
}


def _spec(arch):
    """One layer list for both libraries: (name, kwargs)."""
    if arch == "mlp":
        return [("Dense", {"out_dim": 512, "W_std": 1.5, "b_std": 0.05}), ("Relu", {}),
                ("Dense", {"out_dim": 512, "W_std": 1.5, "b_std": 0.05}), ("Relu", {}),
                ("Dense", {"out_dim": 1, "W_std": 1.5, "b_std": 0.05})]  # fmt: skip
    conv = [("Conv", {"out_chan": 64, "filter_shape": (3, 3), "padding": "SAME", "W_std": 1.5,
                      "b_std": 0.05}), ("Relu", {}),
            ("Conv", {"out_chan": 64, "filter_shape": (3, 3), "padding": "SAME", "W_std": 1.5,
                      "b_std": 0.05}), ("Relu", {})]  # fmt: skip
    head = ("GlobalAvgPool", {}) if arch == "cnn_gap" else ("Flatten", {})
    return [*conv, head, ("Dense", {"out_dim": 1, "W_std": 1.5, "b_std": 0.05})]


def _inputs(n, shape, seed=0):
    import numpy as np

    return np.random.default_rng(seed).normal(size=(n, *shape))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _run_kernelens(arch, n, shape, dtype, repeats):
    import torch

    torch.set_num_threads(1)
    import kernelens.infinite as inf

    dt = torch.float32 if dtype == "float32" else torch.float64
    x = torch.from_numpy(_inputs(n, shape)).to(dt)
    net = inf.serial(*[getattr(inf, name)(**kw) for name, kw in _spec(arch)])
    net.kernel(x[:4])  # warm-up (imports, allocator)
    base = _current_rss_mb()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        k = net.kernel(x, get=("nngp", "ntk"))
        times.append(time.perf_counter() - t0)
    return times, base, float(k.ntk.double().sum()), float(k.ntk.double().abs().max())


def _run_nt(arch, n, shape, dtype, repeats):
    import jax

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from neural_tangents import stax

    layers = []
    for name, kw in _spec(arch):
        kw = dict(kw)
        if "filter_shape" in kw:
            kw["filter_shape"] = tuple(kw["filter_shape"])
        layers.append(getattr(stax, name)(**kw))
    _, _, kernel_fn = stax.serial(*layers)
    kernel_fn = jax.jit(kernel_fn, static_argnames="get")
    x = _inputs(n, shape)
    if x.ndim == 4:
        x = np.moveaxis(x, 1, -1)
    x = jnp.asarray(x, dtype=jnp.float32 if dtype == "float32" else jnp.float64)
    kernel_fn(x[:4], None, get=("nngp", "ntk")).ntk.block_until_ready()  # compile small
    base = _current_rss_mb()
    times = []
    for _ in range(repeats + 1):  # the first full-size call compiles for this shape
        t0 = time.perf_counter()
        k = kernel_fn(x, None, get=("nngp", "ntk"))
        k.ntk.block_until_ready()
        times.append(time.perf_counter() - t0)
    ntk = np.asarray(k.ntk, dtype=np.float64)
    return times[1:], base, float(ntk.sum()), float(np.abs(ntk).max())


def _child(lib, case, dtype, scale):
    arch, n, shape, repeats = CASES[case]
    n = max(8, round(n * scale))
    fn = _run_kernelens if lib == "kernelens" else _run_nt
    times, base, ntk_sum, ntk_max = fn(arch, n, shape, dtype, repeats)
    print(json.dumps({"times": times, "peak_mb": _rss_mb() - base, "n": n,
                      "ntk_sum": ntk_sum, "ntk_max": ntk_max}))  # fmt: skip


def _measure(lib, case, dtype, scale, nt_limit_gb, timeout):
    py = sys.executable if lib == "kernelens" else str(NT_PYTHON)
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(ROOT / "src")}
    cmd = [py, "-m", "benchmarks.infinite", "--child", lib, case, dtype, str(scale)]
    if lib == "neural-tangents" and nt_limit_gb:
        limit = int(nt_limit_gb * 2**30)
        cmd = ["prlimit", f"--as={limit}", *cmd]
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"timeout > {timeout} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or "").strip().splitlines()[-1:] or ["no output"]
        oom = any(s in done.stderr for s in ("RESOURCE_EXHAUSTED", "MemoryError", "bad_alloc",
                                             "Out of memory", "std::bad_alloc"))  # fmt: skip
        return {"error": "out of memory" if oom else tail[0][:120]}
    return json.loads(lines[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", nargs=4, metavar=("LIB", "CASE", "DTYPE", "SCALE"))
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--dtypes", nargs="*", default=["float32", "float64"])
    parser.add_argument("--nt-memory-limit-gb", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)
    if args.child:
        lib, case, dtype, scale = args.child
        _child(lib, case, dtype, float(scale))
        return

    sys.path.insert(0, str(ROOT))
    from benchmarks.harness import markdown_table, record

    rows = []
    for case in args.cases:
        for dtype in args.dtypes:
            res = {lib: _measure(lib, case, dtype, args.scale, args.nt_memory_limit_gb,
                                 args.timeout)
                   for lib in ("kernelens", "neural-tangents")}  # fmt: skip
            ours, peer = res["kernelens"], res["neural-tangents"]

            def cell(r):
                if "error" in r:
                    return r["error"], "-"
                return min(r["times"]), r["peak_mb"]

            t_ours, m_ours = cell(ours)
            t_peer, m_peer = cell(peer)
            ratio = (
                t_peer / t_ours if isinstance(t_ours, float) and isinstance(t_peer, float) else "-"
            )
            agree = "-"
            if "ntk_sum" in ours and "ntk_sum" in peer:
                agree = abs(ours["ntk_sum"] - peer["ntk_sum"]) / abs(peer["ntk_sum"])
            n = ours.get("n", peer.get("n", "-"))
            rows.append([case, n, dtype, t_ours, t_peer, ratio, m_ours, m_peer, agree])
            print(rows[-1], flush=True)
    columns = ["case", "N", "dtype", "kernelens s", "neural-tangents s", "nt / kernelens",
               "kernelens peak MiB", "nt peak MiB", "rel. diff of sum(NTK)"]  # fmt: skip
    table = markdown_table(columns, rows)
    print(table)
    if args.record:
        limit = (f" neural-tangents ran under an address-space limit of "
                 f"{args.nt_memory_limit_gb:g} GiB (prlimit --as)."
                 if args.nt_memory_limit_gb else "")  # fmt: skip
        body = (
            "Analytic NNGP + NTK of the issue-11 cases (`benchmarks/infinite.py`): each cell "
            "is its own subprocess on one thread; time is the best of the timed calls "
            "(neural-tangents: `jax.jit(kernel_fn)`, compiled by an untimed first call at full "
            "size); peak memory is `ru_maxrss` minus the resident size before the timed calls. "
            f"N scaled by {args.scale:g} from the issue's sizes.{limit} **Measured under load** "
            "(shared machine; see the load average below): ratios are more meaningful than "
            "absolute times.\n\n" + table
        )
        title = f"infinite: analytic kernels vs neural-tangents (scale {args.scale:g}"
        if args.nt_memory_limit_gb:
            title += f", neural-tangents limited to {args.nt_memory_limit_gb:g} GiB"
        budget = os.environ.get("KERNELENS_MEMORY_BUDGET")
        if budget:
            title += f", KERNELENS_MEMORY_BUDGET={budget}"
        record(title + ")", body)


if __name__ == "__main__":
    main()
