"""Generate tests/dynamics/fixtures/*.npz from neural-tangents 0.6.5 (run in /work/.venv-nt).

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
        /work/.venv-nt/bin/python benchmarks/make_dynamics_fixtures.py

Stores, in float64, the kernels (analytic NTK/NNGP of stax Dense/Relu MLPs, and an empirical
``[N, N, O, O]`` NTK of a finite stax MLP), the inputs and initial outputs, and neural-tangents'
``predict.gradient_descent_mse`` and ``predict.gradient_descent_mse_ensemble`` outputs for
finite times and ``t = None``, with ``diag_reg`` on and off and several learning rates, so that
kernelens' tests need no JAX. This file imports no kernelens and no torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "dynamics" / "fixtures"
TIMES = np.array([0.0, 0.3, 2.0, 17.0, 250.0])
LRS = (0.5, 1.0, 3.0)
REGS = (0.0, 1e-3)
#: Architectures the ensemble fixtures use: (depth, width, W_std, b_std); stax.Dense with the
#: default NTK parameterisation, ReLU after every hidden layer.
ARCHS = {"relu2": (2, 512, 1.5, 0.05), "relu3": (3, 512, 1.3, 0.1)}


def mlp(depth: int, width: int, w_std: float, b_std: float, out: int):
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(width, W_std=w_std, b_std=b_std), stax.Relu()]
    layers.append(stax.Dense(out, W_std=w_std, b_std=b_std))
    return stax.serial(*layers)


def predict_fixtures(rng: np.random.Generator) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    n, m, d, o = 12, 5, 4, 3
    x_train = rng.standard_normal((n, d))
    x_test = rng.standard_normal((m, d))
    y_train = rng.standard_normal((n, o))
    _, _, kernel_fn = mlp(2, 512, 1.5, 0.05, o)
    k_dd = np.asarray(kernel_fn(x_train, None, "ntk"))
    k_td = np.asarray(kernel_fn(x_test, x_train, "ntk"))
    # an empirical [N, N, O, O] NTK of a small finite network (trace_axes=())
    init_fn, apply_fn, _ = mlp(1, 16, 1.5, 0.05, o)
    _, params = init_fn(jax.random.PRNGKey(1), x_train.shape)
    ntk_fn = nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0)
    e_dd = np.asarray(ntk_fn(x_train, None, params))
    e_td = np.asarray(ntk_fn(x_test, x_train, params))
    f_dd = np.asarray(apply_fn(params, x_train))
    f_td = np.asarray(apply_fn(params, x_test))
    out.update(
        x_train=x_train,
        x_test=x_test,
        y_train=y_train,
        times=TIMES,
        shared_k_dd=k_dd,
        shared_k_td=k_td,
        full_k_dd=e_dd,
        full_k_td=e_td,
        fx_train_0=f_dd,
        fx_test_0=f_td,
    )
    for kind, kdd, ktd, trace_axes in (
        ("shared", k_dd, k_td, (-1,)),
        ("full", e_dd, e_td, ()),
    ):
        for lr in LRS:
            for reg in REGS:
                for absolute in (False, True) if reg else (False,):
                    fn = nt.predict.gradient_descent_mse(
                        kdd,
                        y_train,
                        learning_rate=lr,
                        diag_reg=reg,
                        diag_reg_absolute_scale=absolute,
                        trace_axes=trace_axes,
                    )
                    key = f"{kind}_lr{lr}_reg{reg}_abs{int(absolute)}"
                    tr, te = fn(TIMES, f_dd, f_td, ktd)
                    out[f"{key}_train_t"] = np.asarray(tr)
                    out[f"{key}_test_t"] = np.asarray(te)
                    tr, te = fn(None, f_dd, f_td, ktd)
                    out[f"{key}_train_inf"] = np.asarray(tr)
                    out[f"{key}_test_inf"] = np.asarray(te)
                    # train only, zero initial outputs (the defaults)
                    out[f"{key}_train0_t"] = np.asarray(fn(TIMES))
    return out


def ensemble_fixtures(rng: np.random.Generator) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    n, m, d, o = 10, 6, 5, 2
    x_train = rng.standard_normal((n, d))
    x_test = rng.standard_normal((m, d))
    y_train = rng.standard_normal((n, o))
    out.update(x_train=x_train, x_test=x_test, y_train=y_train, times=TIMES)
    for arch, (depth, width, w_std, b_std) in ARCHS.items():
        out[f"{arch}_spec"] = np.array([depth, width, w_std, b_std])
        _, _, kernel_fn = mlp(depth, width, w_std, b_std, o)
        for name, (a, b) in {
            "dd": (x_train, None),
            "td": (x_test, x_train),
            "tt": (x_test, None),
        }.items():
            k = kernel_fn(a, b, ("nngp", "ntk"))
            out[f"{arch}_nngp_{name}"] = np.asarray(k.nngp)
            out[f"{arch}_ntk_{name}"] = np.asarray(k.ntk)
        for lr in (1.0, 2.5):
            for reg in (0.0, 1e-4):
                ens = nt.predict.gradient_descent_mse_ensemble(
                    kernel_fn, x_train, y_train, learning_rate=lr, diag_reg=reg
                )
                for get in ("nngp", "ntk"):
                    key = f"{arch}_lr{lr}_reg{reg}_{get}"
                    for tname, t in (("t", TIMES), ("inf", None)):
                        g = ens(t, x_test, get, compute_cov=True)
                        out[f"{key}_test_{tname}_mean"] = np.asarray(g.mean)
                        out[f"{key}_test_{tname}_cov"] = np.asarray(g.covariance)
                        g = ens(t, None, get, compute_cov=True)
                        out[f"{key}_train_{tname}_mean"] = np.asarray(g.mean)
                        out[f"{key}_train_{tname}_cov"] = np.asarray(g.covariance)
                        out[f"{key}_test_{tname}_meanonly"] = np.asarray(ens(t, x_test, get))
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240612)
    meta = {"neural_tangents": np.array(nt.__version__), "jax": np.array(jax.__version__)}
    for name, fn in (("predict", predict_fixtures), ("ensemble", ensemble_fixtures)):
        data = fn(rng)
        assert all(np.asarray(v).dtype != np.float32 for v in data.values()), "float32 leaked"
        tmp = OUT / f"{name}.tmp.npz"
        np.savez_compressed(tmp, **data, **meta)
        tmp.replace(OUT / f"{name}.npz")
        print(f"wrote {OUT / (name + '.npz')}: {len(data)} arrays", file=sys.stderr)


if __name__ == "__main__":
    main()
