"""The global NTK (kernelens.gntk) against the dense routes.

1. One NTK_S matvec and the top-10 eigenpairs, matrix-free (``global_ntk(rnn, x)``: P by
   per-step jvp/vjp, K by the Kronecker core) against the dense Jacobian route (form
   ``J = dh/dtheta [S, P]`` with torch.func.jacrev, then ``J (J^T v)`` and the top-10 of
   ``J^T J``), for a tanh RNN (I = 4, H = 64, T = 50) as B * T * H grows to about 10^6
   states. The dense route stops where J no longer fits 256 MiB (forming it is the cost). Peak memory is reported.
2. The propagator P: our matrix-free recursion against a dense-Jacobian recursion (as kpflow:
   per-step Jacobians ``[B, T, H, H]`` by vmap(jacrev), then ``y_t = u_t + A_t y_{t-1}`` by
   batched matmuls, in float32 as kpflow and in float64) and against a truncated Neumann
   series ``sum_{j<m} N^j u`` (``N = I - P^-1``; exact at ``m = T`` since N is nilpotent);
   time and relative error against the float64 matrix-free P.

Run: ``.venv/bin/python -m benchmarks.gntk [--record] [--quick] [--max-states N]`` (one torch
thread).
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from benchmarks.harness import markdown_table, peak_rss_mb, record, time_call
from kernelens.gntk import global_ntk

I_IN, H, T = 4, 64, 50


def _rnn(hidden: int = H, seed: int = 0) -> nn.RNN:
    torch.manual_seed(seed)
    rnn = nn.RNN(I_IN, hidden, batch_first=True).double()
    with torch.no_grad():
        rnn.weight_hh_l0.normal_(0, 1.2 / math.sqrt(hidden))
    return rnn


def _dense_jacobian(rnn: nn.RNN, x: torch.Tensor) -> torch.Tensor:
    params = {n: p.detach() for n, p in rnn.named_parameters()}
    jac = jacrev(lambda p: functional_call(rnn, p, (x,))[0].reshape(-1))(params)
    return torch.cat([j.reshape(j.shape[0], -1) for j in jac.values()], dim=1)


def _setup(B: int):
    x = torch.randn(B, T, I_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(B))
    rnn = _rnn()
    v = torch.randn(B * T * H, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return rnn, x, v


def _matrix_free_row(B: int) -> list:
    rnn, x, v = _setup(B)
    G = time_call(lambda: global_ntk(rnn, x), warmup=1, repeats=1).value
    mv = time_call(lambda: G.ntk.matmat(v), warmup=1, repeats=3)
    eig = time_call(lambda: G.spectrum(10, block_size=2), warmup=0, repeats=1)
    n_params = sum(p.numel() for p in rnn.parameters())
    row = [B, B * T * H, n_params, mv.median, eig.median, round(peak_rss_mb())]
    return [row, mv.value, eig.value[0]]


def _dense_cells(B: int, mv: torch.Tensor, ev: torch.Tensor) -> list:
    rnn, x, v = _setup(B)
    J = time_call(lambda: _dense_jacobian(rnn, x), warmup=0, repeats=1)
    Jd = J.value
    dmv = time_call(lambda: Jd @ (Jd.T @ v), warmup=1, repeats=3)
    deig = time_call(lambda: torch.linalg.eigvalsh(Jd.T @ Jd), warmup=0, repeats=1)
    top = deig.value.flip(0)[:10]
    return [
        f"{J.median:.3g} + {dmv.median:.3g}",
        f"{J.median:.3g} + {deig.median:.3g}",
        float((mv - dmv.value).norm() / dmv.value.norm()),
        float((ev - top).abs().max() / top[0]),
    ]


def bench_ntk(batches: list[int], dense_limit: int) -> str:
    """Matrix-free rows first (so the peak memory column is theirs), then the dense route
    where J fits ``dense_limit`` bytes."""
    done = [_matrix_free_row(B) for B in batches]
    rows = []
    for row, mv, ev in done:
        fits = row[1] * row[2] * 8 <= dense_limit
        rows.append([*row, *(_dense_cells(row[0], mv, ev) if fits else ["-"] * 4)])
    cols = [
        "B", "states S", "params", "matvec (s)", "top-10 eigs (s)",
        "peak RSS after it (MiB)", "dense: form J + matvec (s)", "dense: form J + eigh (s)",
        "matvec rel. err", "top-10 rel. err",
    ]  # fmt: skip
    return markdown_table(cols, rows)


def _kpflow_p(rnn: nn.RNN, x: torch.Tensor, states: torch.Tensor, U: torch.Tensor, dtype):
    """Dense per-step Jacobians [B, T, H, H], then the forward recursion (kpflow's route)."""
    W_ih, W_hh = rnn.weight_ih_l0.to(dtype), rnn.weight_hh_l0.to(dtype)
    b = (rnn.bias_ih_l0 + rnn.bias_hh_l0).to(dtype)
    B, T_, Hh = states.shape
    prev = torch.cat([states.new_zeros(B, 1, Hh), states[:, :-1]], dim=1).to(dtype)
    xs = x.to(dtype)

    def cell(h, xt):
        return torch.tanh(W_hh @ h + W_ih @ xt + b)

    A = vmap(vmap(jacrev(cell)))(prev, xs)  # [B, T, H, H]
    u = U.to(dtype)
    y = torch.empty_like(u)
    y[:, 0] = u[:, 0]
    for t in range(1, T_):
        y[:, t] = u[:, t] + torch.einsum("bij,bj->bi", A[:, t], y[:, t - 1])
    return y


def _neumann_p(G, u: torch.Tensor, terms: int) -> torch.Tensor:
    """``sum_{j < terms} N^j u`` with ``N u = u - P^-1 u`` (matrix-free)."""
    out, term = u.clone(), u
    for _ in range(terms - 1):
        term = term - G.P_inverse.matmat(term)
        out = out + term
    return out


def bench_p(B: int, T_: int, hidden: int) -> str:
    rnn = _rnn(hidden)
    x = torch.randn(B, T_, I_IN, dtype=torch.float64)
    G = global_ntk(rnn, x)
    S = B * T_ * hidden
    u = torch.randn(S, 1, dtype=torch.float64)
    ours = time_call(lambda: G.P.matmat(u), warmup=1, repeats=3)
    ref = ours.value
    states = G.states
    U = u.reshape(B, T_, hidden)
    rows = [["kernelens matrix-free P (float64)", ours.median, 0.0, 1.0, "-"]]

    def err(y):
        return float((y.detach().reshape(-1).double() - ref[:, 0]).norm() / ref.norm())

    for dtype, label in ((torch.float32, "float32, as kpflow"), (torch.float64, "float64")):
        t = time_call(lambda d=dtype: _kpflow_p(rnn, x, states, U, d), warmup=1, repeats=2)
        jac_mb = B * T_ * hidden * hidden * (4 if dtype == torch.float32 else 8) / 2**20
        rows.append([f"dense-Jacobian recursion ({label})", t.median, err(t.value),
                     t.median / ours.median, f"{jac_mb:.0f}"])  # fmt: skip
    for m in sorted({5, 10, T_ // 2, T_}):
        t = time_call(lambda m=m: _neumann_p(G, u, m), warmup=0, repeats=1)
        rows.append([f"truncated Neumann series, {m} terms", t.median, err(t.value),
                     t.median / ours.median, "-"])  # fmt: skip
    title = f"P u for a tanh RNN (gain 1.2), B = {B}, T = {T_}, H = {hidden}: S = {S}"
    return f"{title}\n\n" + markdown_table(
        ["route", "time (s)", "rel. error", "time / ours", "Jacobians (MiB)"], rows
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--record", action="store_true", help="write the tables to BENCHMARKS.md")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    p.add_argument("--max-states", type=int, default=1_024_000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    top = args.max_states // (T * H)
    batches = [2, 8] if args.quick else sorted({2, 8, 32, max(2, top // 4), max(2, top)})
    part1 = bench_ntk(batches, dense_limit=256 << 20)
    sizes = [(4, 20, 16)] if args.quick else [(32, 100, 64), (8, 50, 512)]
    part2 = "\n\n".join(bench_p(*s) for s in sizes)
    body = (
        f"NTK_S of a tanh RNN (I = {I_IN}, H = {H}, T = {T}), float64: one matvec and the "
        "top-10 eigenpairs (Lanczos, block 2), matrix-free vs the dense Jacobian route "
        "(errors against it where J fits 256 MiB).\n\n"
        f"{part1}\n\n{part2}\n\nMeasured under load (other jobs shared the 2 cores; the load "
        "average is in the machine line): absolute times are inflated, same-run ratios hold."
    )
    print(body)
    if args.record:
        record("gntk: global NTK matvec, spectrum and P vs dense routes", body)


if __name__ == "__main__":
    main()
