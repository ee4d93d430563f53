"""Generate neural-tangents 0.6.5 reference kernels for tests/infinite (run in the peer venv).

    /work/.venv-nt/bin/python benchmarks/make_infinite_fixtures.py

Each case is a JSON layer spec (the same spec builds the kernelens network in the tests),
evaluated in float64 (jax_enable_x64) for a cross pair (x1, x2) and for x2 = None. Images are
stored NCHW (kernelens' layout) and transposed to NHWC for neural-tangents. One .npz per case
under tests/infinite/fixtures/, with the spec, the inputs and both kernels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "infinite" / "fixtures"


def _mlp(act, param, depth=2, width=9):
    layers = []
    for _ in range(depth):
        layers += [["Dense", {"out_dim": width, "W_std": 1.4, "b_std": 0.3, "parameterization": param}], act]
        width += 4
    layers.append(["Dense", {"out_dim": 1, "W_std": 1.2, "b_std": 0.1, "parameterization": param}])
    return layers


def _residual(param):
    dense = lambda w: ["Dense", {"out_dim": w, "W_std": 1.3, "b_std": 0.2, "parameterization": param}]  # noqa: E731
    block = ["serial", [["FanOut", {"num": 2}],
                        ["parallel", [["serial", [["Relu", {}], dense(11)]], ["Identity", {}]]],
                        ["FanInSum", {}]]]
    return [dense(11), block, block, ["Relu", {}], dense(1)]


def _cnn(param, head, padding1="SAME", padding2="VALID", strides2=(2, 2)):
    conv = lambda c, f, s, p: ["Conv", {"out_chan": c, "filter_shape": f, "strides": s, "padding": p,  # noqa: E731
                                        "W_std": 1.5, "b_std": 0.1, "parameterization": param}]
    layers = [conv(5, (3, 3), None, padding1), ["Relu", {}], conv(7, (2, 3), strides2, padding2), ["Relu", {}]]
    layers += head
    layers.append(["Dense", {"out_dim": 1, "W_std": 1.1, "b_std": 0.2, "parameterization": param}])
    return layers


CASES = {}
for p in ("ntk", "standard"):
    CASES[f"mlp_relu_{p}"] = (_mlp(["Relu", {}], p, depth=3), "vector")
    CASES[f"residual_{p}"] = (_residual(p), "vector")
    CASES[f"layernorm_{p}"] = (
        [["Dense", {"out_dim": 10, "W_std": 1.2, "b_std": 0.4, "parameterization": p}], ["LayerNorm", {}],
         ["Relu", {}], ["Dense", {"out_dim": 6, "W_std": 0.9, "b_std": 0.1, "parameterization": p}],
         ["LayerNorm", {"eps": 1e-3}], ["Erf", {}], ["Dense", {"out_dim": 1, "parameterization": p}]], "vector")
    CASES[f"cnn_flatten_{p}"] = (_cnn(p, [["Flatten", {}]]), "image")
    CASES[f"cnn_gap_{p}"] = (_cnn(p, [["GlobalAvgPool", {}]], "CIRCULAR", "SAME", (1, 1)), "image")
CASES["mlp_erf"] = (_mlp(["Erf", {"a": 0.8, "b": 1.3, "c": 0.1}], "ntk"), "vector")
CASES["mlp_gelu"] = (_mlp(["Gelu", {}], "ntk"), "vector")
CASES["mlp_abrelu"] = (_mlp(["ABRelu", {"a": -0.4, "b": 1.2}], "standard"), "vector")
CASES["mlp_leaky_abs"] = (
    [["Dense", {"out_dim": 5, "b_std": 0.2}], ["LeakyRelu", {"alpha": 0.2}],
     ["Dense", {"out_dim": 5, "b_std": 0.2}], ["Abs", {}], ["Dense", {"out_dim": 1}]], "vector")
CASES["mlp_dropout"] = (
    [["Dense", {"out_dim": 5, "W_std": 1.3, "b_std": 0.2}], ["Relu", {}], ["Dropout", {"rate": 0.7}],
     ["Dense", {"out_dim": 5, "W_std": 1.3, "b_std": 0.2}], ["Relu", {}],
     ["Dropout", {"rate": 0.5, "mode": "test"}], ["Dense", {"out_dim": 1}]], "vector")
CASES["concat"] = (
    [["Dense", {"out_dim": 6, "b_std": 0.3}], ["FanOut", {"num": 2}],
     ["parallel", [["serial", [["Relu", {}], ["Dense", {"out_dim": 4, "W_std": 1.5}]]],
                   ["serial", [["Erf", {}], ["Dense", {"out_dim": 9, "W_std": 0.7, "b_std": 0.5}]]]]],
     ["FanInConcat", {}], ["Dense", {"out_dim": 1, "b_std": 0.1}]], "vector")
CASES["cnn_avgpool"] = (
    [["Conv", {"out_chan": 4, "filter_shape": (3, 3), "padding": "SAME", "b_std": 0.2}], ["Relu", {}],
     ["AvgPool", {"window_shape": (2, 2), "strides": (2, 2), "padding": "VALID"}],
     ["Conv", {"out_chan": 4, "filter_shape": (2, 2), "padding": "VALID", "W_std": 1.3}], ["Relu", {}],
     ["GlobalAvgPool", {}], ["Dense", {"out_dim": 1}]], "image")
CASES["cnn_avgpool_same_flatten"] = (
    [["Conv", {"out_chan": 4, "filter_shape": (3, 3), "padding": "VALID", "b_std": 0.2}], ["Relu", {}],
     ["AvgPool", {"window_shape": (3, 2), "strides": (2, 1), "padding": "SAME"}],
     ["Conv", {"out_chan": 4, "filter_shape": (2, 2), "padding": "CIRCULAR", "W_std": 1.3, "b_std": 0.1}],
     ["Relu", {}], ["GlobalAvgPool", {}], ["Dense", {"out_dim": 1}]], "image")
CASES["cnn1d"] = (
    [["Conv", {"out_chan": 4, "filter_shape": (3,), "padding": "SAME", "b_std": 0.2}], ["Gelu", {}],
     ["Conv", {"out_chan": 6, "filter_shape": (2,), "strides": (2,), "padding": "VALID", "W_std": 1.3}],
     ["Relu", {}], ["Flatten", {}], ["Dense", {"out_dim": 1, "b_std": 0.3}]], "seq")


def _nt_layer(spec):
    name, args = spec
    if name in ("serial", "parallel"):
        return getattr(stax, name)(*[_nt_layer(s) for s in args])
    args = dict(args)
    for key in ("filter_shape", "strides", "window_shape"):
        if args.get(key) is not None:
            args[key] = tuple(args[key])
    return getattr(stax, name)(**args)


def _inputs(kind, rng):
    if kind == "vector":
        return rng.normal(size=(5, 4)), rng.normal(size=(4, 4))
    if kind == "seq":
        return rng.normal(size=(5, 3, 8)), rng.normal(size=(4, 3, 8))
    return rng.normal(size=(5, 3, 6, 7)), rng.normal(size=(4, 3, 6, 7))


def _to_nt(x):
    return np.moveaxis(x, 1, -1) if x.ndim > 2 else x


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    for name, (layers, kind) in CASES.items():
        _, _, kernel_fn = stax.serial(*[_nt_layer(s) for s in layers])
        x1, x2 = _inputs(kind, rng)
        cross = kernel_fn(_to_nt(x1), _to_nt(x2), ("nngp", "ntk"))
        sym = kernel_fn(_to_nt(x1), None, ("nngp", "ntk"))
        np.savez(
            OUT / f"{name}.npz",
            spec=np.array(json.dumps(layers)),
            x1=x1,
            x2=x2,
            nngp=np.asarray(cross.nngp),
            ntk=np.asarray(cross.ntk),
            nngp_sym=np.asarray(sym.nngp),
            ntk_sym=np.asarray(sym.ntk),
            version=np.array("neural-tangents 0.6.5, jax " + jax.__version__ + ", float64"),
        )
        print(name, np.asarray(cross.ntk).shape)


if __name__ == "__main__":
    main()
