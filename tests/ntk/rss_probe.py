"""Run one NTK call in this (fresh) process and print its peak working set as JSON.

``python rss_probe.py SCENARIO BUDGET_BYTES N``: builds the scenario's model and inputs, makes a
tiny warm-up call of the same function (paying torch's one-time initialisation), then resets
the peak-RSS counter (``/proc/self/clear_refs``), runs the call and prints
``{"before": RSS before, "peak": peak RSS during the call, "result": bytes of the result}``.
"""

from __future__ import annotations

import gc
import json
import sys

import torch
from torch import nn


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _mlp(d: int, width: int, o: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(d, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, o)
    ).double()


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10 * 10, 4)
    ).double()


def scenario(name: str, budget: int, n: int):
    """``(call(x) -> result, full inputs, warm-up inputs)`` of a named scenario."""
    from kernelens import empirical_ntk
    from kernelens.ntk import NTKOperator

    if name == "ntvp":
        model, x = _mlp(10, 256, 1), torch.randn(n, 10, dtype=torch.float64)
        return (
            lambda z: empirical_ntk(model, z, method="ntvp", output="trace", memory_budget=budget)
        ), x
    if name == "structured":
        model, x = _mlp(10, 256, 3), torch.randn(n, 10, dtype=torch.float64)
        return (lambda z: empirical_ntk(model, z, output="trace", memory_budget=budget)), x
    if name == "jacobian":
        model, x = _mlp(10, 64, 3), torch.randn(n, 10, dtype=torch.float64)
        return (
            lambda z: empirical_ntk(
                model, z, method="jacobian", output="trace", memory_budget=budget
            )
        ), x
    if name == "conv":
        model, x = _cnn(), torch.randn(n, 1, 12, 12, dtype=torch.float64)
        return (lambda z: empirical_ntk(model, z, output="trace", memory_budget=budget)), x
    if name == "operator":
        model, x = _mlp(10, 256, 3), torch.randn(n, 10, dtype=torch.float64)

        def apply(z):
            op = NTKOperator(model, z, backend="ntvp", memory_budget=budget)
            return op @ torch.ones(op.shape[0], 8, dtype=torch.float64)

        return apply, x
    raise ValueError(name)


def main() -> None:
    torch.set_num_threads(1)
    name, budget, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    fn, x = scenario(name, budget, n)
    fn(x[:4])  # warm-up: lazy initialisation of torch, not the call's working set
    gc.collect()
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    out = fn(x)
    peak = _status("VmHWM")
    print(json.dumps({"before": before, "peak": peak, "result": out.numel() * out.element_size()}))


if __name__ == "__main__":
    main()
