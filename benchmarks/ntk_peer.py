"""neural-tangents' empirical NTK of the benchmark networks, run in the peer's own venv.

Called by ``benchmarks/ntk.py`` as a subprocess with the neural-tangents venv's Python
(neural-tangents 0.6.5, jax/jaxlib 0.4.23, numpy 1.26: the pins of
``benchmarks/requirements-nt.txt``, under which ``STRUCTURED_DERIVATIVES`` works). It never
imports torch. The network is built with ``stax`` (the structured rules apply to stax layers,
not to plain jax functions) in the ``standard`` parameterisation, so that its parameters are
exactly the torch weights passed in the ``.npz``.

Usage: ``python benchmarks/ntk_peer.py IN.npz OUT.npz REPEATS``. ``IN.npz`` holds ``arch``
(``mlp`` or ``cnn``), ``x`` and the parameters ``w0, b0, w1, b1, ...`` in torch's layouts;
``OUT.npz`` receives, per implementation, the min and all times of ``REPEATS`` timed calls
(after a compiling call; one call for ``NTK_VECTOR_PRODUCTS``) and the kernel ``[N, N, O, O]`` of the last call. Thread count comes
from ``XLA_FLAGS`` set by the caller.
"""

from __future__ import annotations

import sys
import time

import jax
import numpy as np
from neural_tangents import NtkImplementation, empirical_ntk_fn, stax


def build(arch: str, arrays: dict[str, np.ndarray]):
    """The stax network and its parameter pytree from torch-layout weights."""
    if arch == "mlp":
        n_layers = sum(1 for k in arrays if k.startswith("w"))
        layers = []
        for i in range(n_layers):
            layers.append(
                stax.Dense(arrays[f"w{i}"].shape[0], parameterization="standard", b_std=1.0)
            )
            if i < n_layers - 1:
                layers.append(stax.Relu())
        params_fn = [(arrays[f"w{i}"].T, arrays[f"b{i}"]) for i in range(n_layers)]
        init_fn, apply_fn, _ = stax.serial(*layers)
        _, shapes = init_fn(jax.random.PRNGKey(0), arrays["x"].shape)
        params = []
        j = 0
        for layer_params in shapes:
            if layer_params == ():
                params.append(())
            else:
                w, b = params_fn[j]
                params.append((w, b.reshape(layer_params[1].shape)))
                j += 1
        return apply_fn, params
    if arch == "cnn":
        dn = ("NCHW", "OIHW", "NCHW")
        c1, c2 = arrays["w0"].shape[0], arrays["w1"].shape[0]
        init_fn, apply_fn, _ = stax.serial(
            stax.Conv(
                c1,
                (3, 3),
                padding="SAME",
                dimension_numbers=dn,
                parameterization="standard",
                b_std=1.0,
            ),
            stax.Relu(),
            stax.Conv(
                c2,
                (3, 3),
                (2, 2),
                padding="VALID",
                dimension_numbers=dn,
                parameterization="standard",
                b_std=1.0,
            ),
            stax.Relu(),
            stax.Flatten(),
            stax.Dense(arrays["w2"].shape[0], parameterization="standard", b_std=1.0),
        )
        _, shapes = init_fn(jax.random.PRNGKey(0), arrays["x"].shape)
        weights = [arrays["w0"], arrays["w1"], arrays["w2"].T]
        biases = [arrays["b0"], arrays["b1"], arrays["b2"]]
        params, j = [], 0
        for layer_params in shapes:
            if layer_params == ():
                params.append(())
            else:
                params.append((weights[j], biases[j].reshape(layer_params[1].shape)))
                j += 1
        return apply_fn, params
    raise ValueError(f"arch must be 'mlp' or 'cnn', got {arch!r}")


def main() -> None:
    src, dst, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
    arrays = dict(np.load(src))
    arch = str(arrays.pop("arch"))
    x = arrays["x"]
    apply_fn, params = build(arch, arrays)
    out: dict[str, np.ndarray] = {}
    for impl in (
        NtkImplementation.STRUCTURED_DERIVATIVES,
        NtkImplementation.NTK_VECTOR_PRODUCTS,
    ):  # JACOBIAN_CONTRACTION (about 300x the structured one here) is left out
        name = impl.name.lower()
        fn = jax.jit(empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, implementation=impl))
        k = np.asarray(fn(x, None, params).block_until_ready())  # compiles
        times = []
        # the slower one (about 30x the structured one) gets one timed call
        for _ in range(repeats if impl is NtkImplementation.STRUCTURED_DERIVATIVES else 1):
            t0 = time.perf_counter()
            k = fn(x, None, params).block_until_ready()
            times.append(time.perf_counter() - t0)
        out[f"{name}_times"] = np.asarray(times)
        out[f"{name}_kernel"] = np.asarray(k)
    np.savez(dst, **out)


if __name__ == "__main__":
    main()
