"""Neighbour search backends against a brute-force numpy/scipy reference."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from kernelens.sparse import (
    FaissFlatIndex,
    FaissHNSWIndex,
    NeighborIndex,
    TorchExactIndex,
    knn_recall,
    make_index,
)


def _data(n=500, B=60, p=8, dtype=torch.float64, seed=0):
    g = np.random.default_rng(seed)
    P = g.normal(size=(n, p)) + 5.0  # offset: the centring must handle it
    Q = g.normal(size=(B, p)) + 5.0
    return torch.from_numpy(P).to(dtype), torch.from_numpy(Q).to(dtype)


def _reference(P, Q, k):
    D = cdist(Q.double().numpy(), P.double().numpy(), "sqeuclidean")
    idx = np.argsort(D, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, idx, axis=1), idx


@pytest.mark.parametrize("budget", [None, 1])  # 1 byte -> smallest tiles: many merges
def test_torch_exact_matches_bruteforce(budget):
    P, Q = _data()
    k = 7
    d2, idx = TorchExactIndex(memory_budget=budget).build(P).search(Q, k)
    ref_d, ref_i = _reference(P, Q, k)
    np.testing.assert_array_equal(idx.numpy(), ref_i)
    np.testing.assert_allclose(d2.numpy(), ref_d, rtol=1e-10, atol=1e-10)
    assert d2.dtype == torch.float64 and idx.dtype == torch.int64


def test_torch_exact_tiles_really_split():
    # budget of 1 MiB (the floor) with n = 40000 forces several point tiles per query tile
    P, Q = _data(n=40000, B=3, p=4, dtype=torch.float32)
    _d2, idx = TorchExactIndex(memory_budget=1).build(P).search(Q, 5)
    _, ref_i = _reference(P, Q, 5)
    np.testing.assert_array_equal(idx.numpy(), ref_i)


def test_torch_exact_k_equals_n_returns_all_sorted():
    P, Q = _data(n=20, B=4)
    d2, idx = TorchExactIndex().build(P).search(Q, 20)
    assert sorted(idx[0].tolist()) == list(range(20))
    assert bool((d2[:, 1:] >= d2[:, :-1]).all())


def test_faiss_flat_matches_torch():
    P, Q = _data(dtype=torch.float32)
    k = 6
    _, ref_i = _reference(P, Q, k)
    d2, idx = FaissFlatIndex().build(P).search(Q, k)
    np.testing.assert_array_equal(idx.numpy(), ref_i)
    ref_d, _ = _reference(P, Q, k)
    np.testing.assert_allclose(d2.numpy(), ref_d, rtol=1e-4, atol=1e-4)


def test_hnsw_recall_is_high_and_ids_map_back():
    P, Q = _data(n=3000, B=200, p=16, dtype=torch.float32)
    k = 10
    _, exact = TorchExactIndex().build(P).search(Q, k)
    hnsw = FaissHNSWIndex(ef_search=64).build(P)
    d2, idx = hnsw.search(Q, k)
    assert knn_recall(idx, exact) > 0.9
    # returned distances belong to the returned ids
    true_d = ((Q[:, None, :] - P[idx]) ** 2).sum(-1)
    torch.testing.assert_close(d2, true_d, rtol=1e-4, atol=1e-3)
    assert not hnsw.exact and TorchExactIndex.exact and FaissFlatIndex.exact


def test_hnsw_queries_that_are_indexed_points_find_themselves():
    P, _ = _data(n=1000, p=8, dtype=torch.float32)
    _, idx = FaissHNSWIndex().build(P).search(P[:100], 1)
    assert (idx[:, 0] == torch.arange(100)).float().mean() > 0.98


def test_knn_recall_values():
    exact = torch.tensor([[0, 1, 2], [3, 4, 5]])
    assert knn_recall(exact.flip(1), exact) == 1.0
    assert knn_recall(torch.tensor([[0, 9, 8], [3, 4, 7]]), exact) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same shape"):
        knn_recall(exact[:, :2], exact)


def test_make_index_names_and_errors():
    assert isinstance(make_index("auto"), TorchExactIndex)
    assert isinstance(make_index("torch", memory_budget=1 << 20), TorchExactIndex)
    assert isinstance(make_index("faiss"), FaissFlatIndex)
    h = make_index("hnsw", ef_search=99)
    assert isinstance(h, FaissHNSWIndex) and h.ef_search == 99
    inst = TorchExactIndex()
    assert make_index(inst) is inst
    with pytest.raises(ValueError, match="unknown index 'annoy'"):
        make_index("annoy")
    with pytest.raises(ValueError, match="do not pass parameters"):
        make_index(inst, memory_budget=1)
    with pytest.raises(TypeError, match="index must be a name"):
        make_index(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [TorchExactIndex, FaissFlatIndex, FaissHNSWIndex])
def test_index_bad_input(cls):
    P, Q = _data(n=10, B=2, p=3)
    index: NeighborIndex = cls()
    with pytest.raises(RuntimeError, match="not built"):
        index.search(Q, 1)
    index.build(P)
    assert index.n_points == 10
    with pytest.raises(ValueError, match="k=11 exceeds the 10 indexed points"):
        index.search(Q, 11)
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(Q, 0)
    with pytest.raises(
        ValueError, match="queries have 4 features but the index holds points with 3"
    ):
        index.search(torch.zeros(2, 4, dtype=torch.float64), 1)
    Qn = Q.clone()
    Qn[1, 2] = float("nan")
    with pytest.raises(ValueError, match="queries contains 1 non-finite"):
        index.search(Qn, 1)
    with pytest.raises(ValueError, match="points contains"):
        cls().build(torch.full((3, 2), float("inf")))


def test_missing_faiss_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    P, _ = _data(n=10)
    for cls in (FaissFlatIndex, FaissHNSWIndex):
        with pytest.raises(ImportError, match=r"pip install 'kernelens\[fast\]'"):
            cls().build(P)
    # the exact torch search needs no faiss
    TorchExactIndex().build(P).search(P[:2], 3)


def test_copies_keep_configuration_not_built_data():
    import copy

    index = FaissHNSWIndex(ef_search=77).build(_data(n=50)[0])
    twin = copy.deepcopy(index)
    assert twin.ef_search == 77 and not twin.is_built and index.is_built


# -- one rule for every backend: reference distances, ties by the lowest index (issue 10, 12) --
def _reference_metric(P, Q, k, metric):
    kind = "cityblock" if metric == "l1" else "sqeuclidean"
    D = cdist(Q.double().numpy(), P.double().numpy(), kind)
    idx = np.argsort(D, axis=1, kind="stable")[:, :k]  # stable: ties by the lowest index
    return np.take_along_axis(D, idx, axis=1), idx


def _grid(n, B, p, dtype, seed=0):
    """Points on a small integer grid: many duplicates and many equal distances."""
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randint(0, 3, (n, p), generator=g).to(dtype) + 7.0,
        torch.randint(0, 3, (B, p), generator=g).to(dtype) + 7.0,
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("metric", ["l2", "l1"])
def test_torch_and_faiss_flat_identical_on_ties_lowest_index_first(dtype, metric):
    P, Q = _grid(300, 50, 4, dtype)
    k = 10
    d_t, i_t = TorchExactIndex().build(P, metric=metric).search(Q, k)
    d_f, i_f = FaissFlatIndex().build(P, metric=metric).search(Q, k)
    assert torch.equal(i_t, i_f) and torch.equal(d_t, d_f)
    ref_d, ref_i = _reference_metric(P, Q, k, metric)
    np.testing.assert_array_equal(i_t.numpy(), ref_i)
    np.testing.assert_array_equal(d_t.double().numpy(), ref_d)  # small integers: exact


def test_near_ties_below_float32_resolution_are_resolved_exactly():
    # distances differ in the 9th digit: faiss' float32 cannot order them, the proof fails
    # for those rows and the exact scan answers them
    g = np.random.default_rng(3)
    base = g.normal(size=(1, 6)) * 10
    P = torch.from_numpy(base + 1e-7 * g.normal(size=(400, 6)))
    Q = torch.from_numpy(base + 1e-7 * g.normal(size=(20, 6)))
    for index in (TorchExactIndex(), FaissFlatIndex()):
        _, idx = index.build(P).search(Q, 7)
        np.testing.assert_array_equal(idx.numpy(), _reference_metric(P, Q, 7, "l2")[1])


def test_l1_metric_matches_scipy_cityblock():
    P, Q = _data(n=400, B=30, p=5)
    for index in (TorchExactIndex(memory_budget=1), FaissFlatIndex()):
        d, idx = index.build(P, metric="l1").search(Q, 9)
        ref_d, ref_i = _reference_metric(P, Q, 9, "l1")
        np.testing.assert_array_equal(idx.numpy(), ref_i)
        np.testing.assert_allclose(d.numpy(), ref_d, rtol=1e-13)
        assert index.metric == "l1"
    with pytest.raises(ValueError, match="metric"):
        TorchExactIndex().build(P, metric="cosine")


def test_hnsw_breaks_ties_by_lowest_index_among_its_candidates():
    P, Q = _grid(300, 50, 4, torch.float32)
    d, idx = FaissHNSWIndex(ef_search=400).build(P).search(Q, 10)
    # rows in (distance, index) order, and the distances are the reference distances
    ref = ((Q[:, None, :] - P[idx]) ** 2).sum(-1)
    assert torch.equal(d, ref)
    same_d = d[:, 1:] == d[:, :-1]
    assert bool((idx[:, 1:] > idx[:, :-1])[same_d].all())
    assert bool((d[:, 1:] >= d[:, :-1]).all())
    # the distances are the exact ones (which of several tied points at the k-th place it
    # returns depends on the graph's candidates)
    np.testing.assert_array_equal(d.double().numpy(), _reference_metric(P, Q, 10, "l2")[0])


@pytest.mark.parametrize("cls", [TorchExactIndex, FaissFlatIndex, FaissHNSWIndex])
def test_empty_query_batch(cls):
    P, Q = _data(n=50)
    d, idx = cls().build(P).search(Q[:0], 4)
    assert d.shape == (0, 4) and idx.shape == (0, 4) and idx.dtype == torch.int64


@pytest.mark.parametrize("metric", ["l2", "l1"])
def test_exact_scan_without_an_upper_bound_is_the_reference(metric):
    # the path of rows an approximate backend left short of k candidates
    P, Q = _grid(200, 12, 3, torch.float64)
    index = TorchExactIndex(memory_budget=1).build(P, metric=metric)
    upper = torch.full((len(Q),), float("inf"), dtype=torch.float64)
    d, idx = index._scan(Q, Q - index._centre, 9, upper)
    ref_d, ref_i = _reference_metric(P, Q, 9, metric)
    np.testing.assert_array_equal(idx.numpy(), ref_i)
    np.testing.assert_array_equal(d.numpy(), ref_d)


def test_binary_features_with_many_ties_are_exact():
    # most rows have ties at the k-th place: nearly all go through the exact scan
    g = torch.Generator().manual_seed(0)
    P = (torch.rand(2000, 32, generator=g) < 0.1).float()
    Q = (torch.rand(50, 32, generator=g) < 0.1).float()
    ref = _reference_metric(P, Q, 16, "l2")[1]
    for index in (TorchExactIndex(), FaissFlatIndex()):
        np.testing.assert_array_equal(index.build(P).search(Q, 16)[1].numpy(), ref)
