"""The distributed kernel and NTK tiles against the in-process computation (float64)."""

from __future__ import annotations

import itertools
import os
import threading
import time

import pytest
import torch
from torch import nn

distributed = pytest.importorskip("distributed")

from kernelens import empirical_ntk  # noqa: E402
from kernelens.distributed import (  # noqa: E402
    DistributedKernelOperator,
    DistributedNTKOperator,
    check_client,
    distributed_empirical_ntk,
    local_client,
    row_tiles,
)
from kernelens.kernels import make_kernel  # noqa: E402
from kernelens.ntk import NTKOperator  # noqa: E402


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 12), nn.Tanh(), nn.Linear(12, 3)).double()


def _cnn() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)
    ).double()


@pytest.mark.parametrize("name", ["laplace", "gaussian", "product_laplace"])
def test_kernel_operator_matches_in_process(client, name):
    X = torch.randn(700, 5, dtype=torch.float64)
    Z = torch.randn(300, 5, dtype=torch.float64)
    V = torch.randn(700, 3, dtype=torch.float64)
    U = torch.randn(300, 3, dtype=torch.float64)
    k = make_kernel(name, bandwidth=2.0)
    sym = DistributedKernelOperator(k, X, None, client=client)
    assert sym.symmetric
    assert _rel(sym.matmat(V), k(X) @ V) < 1e-12
    rect = DistributedKernelOperator(k, Z, X, client=client)
    assert _rel(rect.matmat(V), k(Z, X) @ V) < 1e-12
    assert _rel(rect.rmatmat(U), k(Z, X).T @ U) < 1e-12


def test_row_tiles_depend_on_shape_only():
    tiles = row_tiles(10_000, 5_000)
    assert tiles[0].start == 0 and tiles[-1].stop == 10_000
    assert all(a.stop == b.start for a, b in itertools.pairwise(tiles))
    assert row_tiles(10_000, 5_000) == tiles


@pytest.mark.parametrize("output", ["full", "diagonal", "trace"])
@pytest.mark.parametrize("arch", [_mlp, _cnn])
def test_ntk_blocks_match_in_process(client, output, arch):
    model = arch()
    shape = (4,) if arch is _mlp else (1, 6, 6)
    x1 = torch.randn(40, *shape, dtype=torch.float64)
    x2 = torch.randn(23, *shape, dtype=torch.float64)
    o = model(x1[:1]).shape[1]
    budget = 1 << 20  # small enough that the plan has several blocks per side
    for a, b in ((x1, None), (x1, x2)):
        got = distributed_empirical_ntk(
            model, a, b, client=client, outputs=o, output=output, memory_budget=budget
        )
        ref = empirical_ntk(model, a, b, output=output)
        assert got.shape == ref.shape
        assert _rel(got, ref) < 1e-12


def test_ntk_blocks_cover_many_blocks(client, monkeypatch):
    import kernelens.distributed.ntk as dntk

    monkeypatch.setattr(dntk, "_MIN_BLOCK", 7)
    monkeypatch.setattr(dntk, "_MAX_BLOCKS_PER_SIDE", 6)
    model = _mlp()
    x = torch.randn(40, 4, dtype=torch.float64)
    got = distributed_empirical_ntk(model, x, None, client=client, outputs=3, output="trace")
    assert _rel(got, empirical_ntk(model, x, output="trace")) < 1e-12
    assert _rel(got, got.T) < 1e-14


@pytest.mark.parametrize("output", ["full", "trace"])
def test_ntk_operator_matches_in_process(client, output):
    model = _mlp()
    x = torch.randn(30, 4, dtype=torch.float64)
    op = DistributedNTKOperator(model, x, client=client, outputs=3, output=output)
    ref = NTKOperator(model, x, output=output)
    V = torch.randn(op.shape[1], 4, dtype=torch.float64)
    assert _rel(op.matmat(V), ref.matmat(V)) < 1e-12


def test_bitwise_identical_across_worker_counts_and_runs(client, client1):
    X = torch.randn(3000, 6, dtype=torch.float64)
    V = torch.randn(3000, 2, dtype=torch.float64)
    k = make_kernel("laplace", bandwidth=3.0)
    a = DistributedKernelOperator(k, X, None, client=client).matmat(V)
    b = DistributedKernelOperator(k, X, None, client=client1).matmat(V)
    c = DistributedKernelOperator(k, X, None, client=client).matmat(V)
    assert torch.equal(a, b) and torch.equal(a, c)
    model = _mlp()
    x = torch.randn(50, 4, dtype=torch.float64)
    kw = {"outputs": 3, "output": "trace", "memory_budget": 1 << 20}
    n2 = distributed_empirical_ntk(model, x, None, client=client, **kw)
    n1 = distributed_empirical_ntk(model, x, None, client=client1, **kw)
    assert torch.equal(n1, n2)


def test_work_runs_on_more_than_one_worker(client):
    X = torch.randn(6000, 4, dtype=torch.float64)
    V = torch.randn(6000, 1, dtype=torch.float64)
    op = DistributedKernelOperator(make_kernel("laplace", bandwidth=2.0), X, None, client=client)
    assert len(row_tiles(6000, 6000)) >= 4
    with distributed.get_task_stream(client) as stream:
        op.matmat(V)
    workers = {t["worker"] for t in stream.data if "_run_tile" in t["key"]}
    assert len(workers) >= 2, workers


def test_workers_use_the_requested_threads(client):
    threads = client.run(lambda: __import__("torch").get_num_threads())
    assert set(threads.values()) == {1}


def test_killed_worker_leaves_identical_result():
    X = torch.randn(12_000, 8, dtype=torch.float64)
    V = torch.randn(12_000, 2, dtype=torch.float64)
    k = make_kernel("laplace", bandwidth=3.0)
    with local_client(n_workers=2, threads_per_worker=1) as c:
        op = DistributedKernelOperator(k, X, None, client=c)
        clean = op.matmat(V)
        victim = sorted(c.scheduler_info()["workers"])[0]

        async def die() -> None:  # a coroutine, so that run(wait=False) accepts it
            os._exit(1)

        def kill() -> None:
            time.sleep(0.3)
            c.run(die, workers=[victim], wait=False)

        killer = threading.Thread(target=kill)
        killer.start()
        faulty = op.matmat(V)
        killer.join()
        assert torch.equal(clean, faulty)
        assert victim not in c.scheduler_info()["workers"]  # the worker really died


def test_closed_client_and_wrong_type_are_refused():
    with local_client(n_workers=1) as c:
        pass
    with pytest.raises(RuntimeError, match="not running"):
        check_client(c)
    with pytest.raises(TypeError, match="distributed.Client"):
        check_client("tcp://127.0.0.1:8786")


def test_client_without_workers_is_refused():
    with (
        distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cl,
        distributed.Client(cl) as c,
    ):
        with pytest.raises(RuntimeError, match="no workers"):
            check_client(c)
