"""SparseKernelLayer against dense kernel ridge regression and a per-query numpy reference;
gradients by gradcheck; index invalidation; state_dict; torch.compile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import solve
from scipy.spatial.distance import cdist
from torch import nn
from torch.func import functional_call

from kernelens.kernels import KernelRidge, make_kernel
from kernelens.sparse import SparseKernelLayer, TorchExactIndex

D64 = torch.float64


def _data(n=40, d=3, c=2, B=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(n, d, generator=g, dtype=D64)
    Y = torch.randn(n, c, generator=g, dtype=D64)
    X = torch.randn(B, d, generator=g, dtype=D64)
    return Z, Y, X


def _numpy_local_krr(Z, Y, X, k, bandwidth, reg):
    """Independent reference: Gaussian kernel, brute-force neighbours, scipy solve."""
    Z, Y, X = Z.numpy(), Y.numpy(), X.numpy()
    out = []
    for x in X:
        nb = np.argsort(((Z - x) ** 2).sum(1), kind="stable")[:k]
        Zk = Z[nb]
        K = np.exp(-cdist(Zk, Zk, "sqeuclidean") / (2 * bandwidth**2))
        alpha = solve(K + reg * np.eye(k), Y[nb], assume_a="pos")
        kx = np.exp(-cdist(x[None], Zk, "sqeuclidean") / (2 * bandwidth**2))
        out.append((kx @ alpha)[0])
    return np.array(out)


@pytest.mark.parametrize("kernel", ["gaussian", "laplace", "mahalanobis_laplace", "polynomial"])
def test_k_equals_n_is_dense_kernel_ridge(kernel):
    Z, Y, X = _data()
    params = {"M": torch.eye(3, dtype=D64) * 0.7} if kernel.startswith("mahalanobis") else {}
    bw = None if kernel == "polynomial" else 1.3
    layer = SparseKernelLayer(
        Z, Y, k=len(Z), kernel=kernel, bandwidth=bw, reg=1e-2, kernel_params=params
    )
    kr_params = {} if bw is None else {"bandwidth": bw}
    ref = KernelRidge(kernel, alpha=1e-2, kernel_params=params or None, **kr_params)
    ref = ref.fit(Z.numpy(), Y.numpy()).predict(X.numpy())
    np.testing.assert_allclose(layer(X).detach().numpy(), ref, rtol=1e-10, atol=1e-11)


def test_k_equals_n_dense_krr_independent_formula():
    Z, Y, X = _data(n=60, B=5)
    layer = SparseKernelLayer(Z, Y, k=60, bandwidth=0.9, reg=1e-4)
    ref = _numpy_local_krr(Z, Y, X, 60, 0.9, 1e-4)  # k = n: one dense system
    np.testing.assert_allclose(layer(X).detach().numpy(), ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("k", [1, 5, 17])
def test_local_krr_matches_per_query_reference(k):
    Z, Y, X = _data(n=80, B=12)
    layer = SparseKernelLayer(Z, Y, k=k, bandwidth=0.8, reg=1e-3)
    ref = _numpy_local_krr(Z, Y, X, k, 0.8, 1e-3)
    np.testing.assert_allclose(layer(X).detach().numpy(), ref, rtol=1e-10, atol=1e-12)


def test_one_dimensional_targets_give_one_dimensional_output():
    Z, Y, X = _data()
    out = SparseKernelLayer(Z, Y[:, 0], k=7)(X)
    assert out.shape == (len(X),)
    torch.testing.assert_close(out, SparseKernelLayer(Z, Y, k=7)(X)[:, 0])


def test_memory_budget_tiling_and_backends_agree():
    Z, Y, X = _data(n=300, B=50)
    ref = SparseKernelLayer(Z, Y, k=8, bandwidth=0.7)(X)
    tiled = SparseKernelLayer(Z, Y, k=8, bandwidth=0.7, memory_budget=1)(X)  # 1 MiB floor
    torch.testing.assert_close(tiled, ref, rtol=0, atol=0)
    faiss = SparseKernelLayer(Z, Y, k=8, bandwidth=0.7, index="faiss")(X)
    torch.testing.assert_close(faiss, ref, rtol=1e-12, atol=1e-12)


def test_query_tiles_split_under_small_budget():
    Z, Y, _ = _data(n=200, d=2)
    X = torch.randn(200, 2, dtype=D64)
    layer = SparseKernelLayer(Z, Y, k=64, bandwidth=0.5, memory_budget=1)
    # per-query bytes ~ 8 * 64 * (8 * 64 + ...) > 260 KiB: a 1 MiB tile holds ~3 queries
    out = layer(X)
    ref = SparseKernelLayer(Z, Y, k=64, bandwidth=0.5)(X)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def _features():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh()).to(D64)


def test_features_module_equals_kernel_on_features():
    Z, Y, X = _data(n=50)
    S = _features()
    layer = SparseKernelLayer(Z, Y, k=10, bandwidth=0.6, features=S)
    with torch.no_grad():
        ref = SparseKernelLayer(S(Z), Y, k=10, bandwidth=0.6)(S(X))
    # trainable S: neighbours' features recomputed with autograd; frozen: cached features
    torch.testing.assert_close(layer(X), ref, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(layer(X), ref, rtol=1e-12, atol=1e-12)


def test_image_centers_with_a_feature_module():
    imgs = torch.rand(30, 1, 4, 4, dtype=D64)
    S = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()).to(D64)
    layer = SparseKernelLayer(imgs, torch.randn(30, 3, dtype=D64), k=5, features=S)
    assert layer(torch.rand(4, 1, 4, 4, dtype=D64)).shape == (4, 3)
    assert layer.center_features().shape == (30, 8)


# -- gradients ---------------------------------------------------------------------------------
def _small():
    Z, Y, X = _data(n=14, d=3, c=2, B=4, seed=3)
    return Z, Y, X


@pytest.mark.parametrize("kernel", ["gaussian", "laplace"])
@pytest.mark.parametrize("k", [5, 14])
def test_gradcheck_queries_centers_targets_bandwidth(kernel, k):
    Z, Y, X = _small()
    layer = SparseKernelLayer(
        Z,
        Y,
        k=k,
        kernel=kernel,
        bandwidth=1.1,
        reg=1e-2,
        learn_centers=True,
        learn_targets=True,
        learn_bandwidth=True,
    )

    def f(x, z, y, bw):
        params = {"centers": z, "targets": y, "log_bandwidth": bw.log()}
        return functional_call(layer, params, (x,))

    bw = torch.tensor(1.1, dtype=D64)
    inputs = tuple(t.clone().requires_grad_(True) for t in (X, Z, Y, bw))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


# B * k >= n: one differentiable pass over all centers; B * k < n: only the selected ones
@pytest.mark.parametrize("n_queries", [4, 1])
def test_gradcheck_feature_module_parameters(n_queries):
    Z, Y, X = _small()
    X = X[:n_queries]
    S = _features()
    layer = SparseKernelLayer(Z, Y, k=6, bandwidth=0.7, reg=1e-2, features=S)
    names = [name for name, _ in S.named_parameters()]

    def f(x, *params):
        return functional_call(layer, {f"features.{n}": p for n, p in zip(names, params)}, (x,))

    inputs = (
        X.clone().requires_grad_(True),
        *tuple(p.detach().clone().requires_grad_(True) for p in S.parameters()),
    )
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("n_queries", [4, 1])
def test_gradcheck_centers_through_feature_module(n_queries):
    Z, Y, X = _small()
    X = X[:n_queries]
    layer = SparseKernelLayer(
        Z, Y, k=6, bandwidth=0.7, reg=1e-2, features=_features(), learn_centers=True
    )

    def f(z):
        return functional_call(layer, {"centers": z}, (X,))

    assert torch.autograd.gradcheck(f, (Z.clone().requires_grad_(True),), eps=1e-6, atol=1e-7)


def test_fixed_parameters_are_buffers_and_learned_are_parameters():
    Z, Y, _ = _small()
    fixed = SparseKernelLayer(Z, Y, k=3)
    assert list(fixed.parameters()) == []
    assert {"centers", "targets", "log_bandwidth"} <= set(dict(fixed.named_buffers()))
    learned = SparseKernelLayer(
        Z, Y, k=3, learn_centers=True, learn_targets=True, learn_bandwidth=True
    )
    assert set(dict(learned.named_parameters())) == {"centers", "targets", "log_bandwidth"}
    # the layer copies its inputs: training it leaves the caller's tensors alone
    assert learned.centers.data_ptr() != Z.data_ptr()


# -- index policy ----------------------------------------------------------------------------------
def _count_builds(layer, monkeypatch):
    calls = []
    orig = layer.index.build

    def build(points, **kw):
        calls.append(points.shape)
        return orig(points, **kw)

    monkeypatch.setattr(layer.index, "build", build)
    return calls


def test_index_rebuilt_after_optimizer_step_and_results_match_fresh_layer(monkeypatch):
    Z, Y, X = _data(n=60)
    layer = SparseKernelLayer(Z, Y, k=5, bandwidth=0.5, learn_centers=True)
    builds = _count_builds(layer, monkeypatch)
    opt = torch.optim.SGD(layer.parameters(), lr=5.0)
    layer(X)
    layer(X)
    assert len(builds) == 1  # unchanged centers: the index is reused
    loss = layer(X).pow(2).sum()
    loss.backward()
    opt.step()
    out = layer(X)
    assert len(builds) == 2
    fresh = SparseKernelLayer(layer.centers.detach(), Y, k=5, bandwidth=0.5)
    torch.testing.assert_close(out, fresh(X), rtol=0, atol=0)


def test_index_rebuilt_when_feature_parameters_change(monkeypatch):
    Z, Y, X = _data(n=60)
    S = _features()
    layer = SparseKernelLayer(Z, Y, k=5, features=S)
    builds = _count_builds(layer, monkeypatch)
    layer(X)
    with torch.no_grad():
        S[0].weight.mul_(3.0)
    out = layer(X)
    assert len(builds) == 2
    with torch.no_grad():
        ref = SparseKernelLayer(S(Z), Y, k=5)(S(X))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_data_edits_need_invalidate_index(monkeypatch):
    Z, Y, X = _data(n=60)
    layer = SparseKernelLayer(Z, Y, k=5)
    builds = _count_builds(layer, monkeypatch)
    layer(X)
    layer.centers.data.mul_(2.0)  # bypasses version counters (documented)
    layer(X)
    assert len(builds) == 1
    layer.invalidate_index()
    layer(X)
    assert len(builds) == 2


def test_nan_appearing_in_learned_centers_is_reported():
    Z, Y, X = _data()
    layer = SparseKernelLayer(Z, Y, k=3, learn_centers=True)
    with torch.no_grad():
        layer.centers[4, 1] = float("nan")
    with pytest.raises(ValueError, match="centers contains 1 non-finite value"):
        layer(X)


# -- state_dict, compile ------------------------------------------------------------------------------
def test_state_dict_round_trip(tmp_path):
    Z, Y, X = _data(n=50)
    a = SparseKernelLayer(
        Z,
        Y,
        k=6,
        bandwidth=0.9,
        features=_features(),
        learn_centers=True,
        learn_targets=True,
        learn_bandwidth=True,
    )
    with torch.no_grad():
        a.log_bandwidth.add_(0.3)
        a.targets.mul_(2.0)
    expected = a(X)
    path = tmp_path / "sk.pt"
    torch.save(a.state_dict(), path)
    Z2, Y2, _ = _data(n=50, seed=7)
    b = SparseKernelLayer(
        Z2,
        Y2,
        k=6,
        bandwidth=0.1,
        features=_features(),
        learn_centers=True,
        learn_targets=True,
        learn_bandwidth=True,
    )
    b(X)  # builds an index on the old centers, which load_state_dict must invalidate
    b.load_state_dict(torch.load(path, weights_only=True))
    torch.testing.assert_close(b(X), expected, rtol=0, atol=0)
    assert set(a.state_dict()) == {
        "centers",
        "targets",
        "log_bandwidth",
        "features.0.weight",
        "features.0.bias",
    }


def test_to_float32_rebuilds_and_runs():
    Z, Y, X = _data(n=50)
    layer = SparseKernelLayer(Z, Y, k=6)
    ref = layer(X)
    layer = layer.float()
    torch.testing.assert_close(layer(X.float()), ref.float(), rtol=1e-4, atol=1e-4)


def test_torch_compile_matches_eager():
    Z, Y, X = _data(n=50)
    layer = SparseKernelLayer(Z, Y, k=6, learn_targets=True)
    compiled = torch.compile(layer)  # forward is excluded from tracing: runs eagerly
    torch.testing.assert_close(compiled(X), layer(X), rtol=0, atol=0)
    compiled(X).sum().backward()
    assert layer.targets.grad is not None


def _model_with_layer():
    torch.manual_seed(0)
    Z, Y, X = _data(n=50)
    return nn.Sequential(
        nn.Linear(3, 3).to(D64), SparseKernelLayer(Z, Y, k=6, learn_centers=True), nn.Tanh()
    ), X


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile_of_a_model_containing_the_layer(backend):
    model, X = _model_with_layer()
    compiled = torch.compile(model, backend=backend)
    out = compiled(X)
    torch.testing.assert_close(out, model(X), rtol=1e-12, atol=1e-12)
    out.sum().backward()
    assert model[0].weight.grad is not None and model[1].centers.grad is not None


# -- bad input ---------------------------------------------------------------------------------------------
def test_bad_k():
    Z, Y, _ = _data(n=10)
    with pytest.raises(ValueError, match="k=11 exceeds the number of centers n=10; use k <= 10"):
        SparseKernelLayer(Z, Y, k=11)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        SparseKernelLayer(Z, Y, k=0)
    with pytest.raises(TypeError, match="k must be an integer"):
        SparseKernelLayer(Z, Y, k=2.5)  # type: ignore[arg-type]


def test_feature_dimension_mismatch():
    Z, Y, _X = _data()
    layer = SparseKernelLayer(Z, Y, k=3)
    with pytest.raises(ValueError, match=r"x has shape \(9, 4\) but the centers are \(40, 3\)"):
        layer(torch.randn(9, 4, dtype=D64))
    with pytest.raises(ValueError, match=r"queries must be \[B, 3\]"):
        layer(torch.randn(3, dtype=D64))
    img = SparseKernelLayer(
        torch.rand(5, 1, 2, 2, dtype=D64), torch.rand(5, 1, dtype=D64), k=2, features=nn.Identity()
    )
    with pytest.raises(ValueError, match=r"features must map \[B, \.\.\.\] to \[B, p\]"):
        img(torch.rand(2, 1, 2, 2, dtype=D64))


def test_nan_in_queries_or_centers():
    Z, Y, X = _data()
    layer = SparseKernelLayer(Z, Y, k=3)
    X[2, 1] = float("nan")
    with pytest.raises(
        ValueError, match=r"x contains 1 non-finite value\(s\) \(NaN; first at index \(2, 1\)\)"
    ):
        layer(X)
    Z[0, 0] = float("nan")
    with pytest.raises(ValueError, match="centers contains 1 non-finite"):
        SparseKernelLayer(Z, Y, k=3)


@pytest.mark.parametrize("bw", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_bandwidth(bw):
    Z, Y, _ = _data()
    with pytest.raises(ValueError, match="bandwidth must be a finite positive number"):
        SparseKernelLayer(Z, Y, k=3, bandwidth=bw)
    with pytest.raises(ValueError, match="bandwidth must be a finite positive number"):
        SparseKernelLayer(Z, Y, k=3, kernel=make_kernel("laplace", bandwidth=1.0), bandwidth=bw)


def test_diverged_learned_bandwidth_is_reported():
    Z, Y, X = _data()
    layer = SparseKernelLayer(Z, Y, k=3, learn_bandwidth=True)
    with torch.no_grad():
        layer.log_bandwidth.fill_(float("nan"))
    with pytest.raises(ValueError, match="bandwidth must be a finite positive number"):
        layer(X)


def test_bad_targets():
    Z, Y, _ = _data(n=40)
    with pytest.raises(ValueError, match="centers has 40, targets has 39"):
        SparseKernelLayer(Z, Y[:39], k=3)
    with pytest.raises(TypeError, match="one-hot"):
        SparseKernelLayer(Z, torch.arange(40), k=3)
    with pytest.raises(TypeError, match="targets has dtype torch.float32 but centers has"):
        SparseKernelLayer(Z, Y.float(), k=3)
    with pytest.raises(ValueError, match="targets must be 1-D or 2-D"):
        SparseKernelLayer(Z, Y[:, :, None], k=3)


def test_bad_kernel_and_bandwidth_options():
    Z, Y, X = _data()
    with pytest.raises(
        ValueError, match="learn_bandwidth=True but kernel 'linear' has no bandwidth"
    ):
        SparseKernelLayer(Z, Y, k=3, kernel="linear", learn_bandwidth=True)
    with pytest.raises(ValueError, match="has no bandwidth; do not pass bandwidth"):
        SparseKernelLayer(Z, Y, k=3, kernel="linear", bandwidth=2.0)
    with pytest.raises(ValueError, match="unknown kernel 'rbf'"):
        SparseKernelLayer(Z, Y, k=3, kernel="rbf")
    with pytest.raises(ValueError, match="reg must be a finite non-negative number"):
        SparseKernelLayer(Z, Y, k=3, reg=-1.0)
    with pytest.raises(TypeError, match="x has dtype torch.float32 but centers"):
        SparseKernelLayer(Z, Y, k=3)(X.float())
    with pytest.raises(TypeError, match="features must be a torch.nn.Module"):
        SparseKernelLayer(Z, Y, k=3, features=lambda t: t)  # type: ignore[arg-type]


def test_kernel_property_exposes_the_kernel():
    Z, Y, X = _data()
    layer = SparseKernelLayer(Z, Y, k=3, kernel="laplace", bandwidth=2.0, learn_bandwidth=True)
    K = layer.kernel(X, Z)
    assert K.shape == (len(X), len(Z))
    torch.testing.assert_close(K, make_kernel("laplace", bandwidth=2.0)(X, Z))
    K.sum().backward()
    assert layer.log_bandwidth.grad is not None
    assert isinstance(layer.index, TorchExactIndex)


@pytest.mark.parametrize("index", ["torch", "faiss", "hnsw"])
def test_deepcopy_and_pickle_rebuild_the_index(index):
    import copy
    import io

    Z, Y, X = _data(n=60)
    layer = SparseKernelLayer(Z, Y, k=5, index=index)
    expected = layer(X)
    twin = copy.deepcopy(layer)  # e.g. a DQN target network
    assert twin._center_features is None and not twin.index.is_built
    torch.testing.assert_close(twin(X), expected, rtol=0, atol=0)
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.load(buf, weights_only=False)(X), expected, rtol=0, atol=0)
