"""Sparse Kernel layer: time per 1,000 queries and peak memory vs the number of centers, and
neighbour search backends (exact torch, faiss IndexFlatL2, faiss HNSW) with recall.

Every configuration runs in its own subprocess, so its peak memory is its own: the table
reports the peak resident-set growth over the process's state after the data were created.

1. SK layer (k = 32, Gaussian kernel, float32, c = 10 outputs) with each search backend vs
   exact (dense, float64) kernel ridge regression, n = 1k .. 200k centers, d = 64, 1,000
   queries; exact KRR only where its n x n Cholesky is feasible here.
2. Search alone: build time, time per 1,000 queries and recall@32 against exact search.
3. ``--recall``: HNSW recall@32 on clustered and isotropic data for several ``ef_search``
   (candidates re-ranked by the reference distances, ties by the lowest index), and whether the
   exact backends (torch, faiss flat) return identical neighbours, with the share of rows the
   exact scan had to answer.

Data: a mixture of 256 Gaussian clusters in R^64 (cluster centres N(0, I), within-cluster
scale 0.35; like learned embeddings, the points are clustered), plus one row of isotropic
N(0, I) data, the hardest case for graph search.

Run: ``.venv/bin/python -m benchmarks.sparse [--quick] [--recall] [--record]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from benchmarks.harness import markdown_table, record, time_call

D, K, C, N_QUERIES = 64, 32, 10, 1000
TITLE = "sparse: SK layer and neighbour search vs number of centers"
RECALL_TITLE = "sparse: HNSW recall and exact-backend agreement (one search rule)"


def _data(n: int, kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Centers ``[n, D]`` and queries ``[N_QUERIES, D]`` from the same distribution."""
    g = torch.Generator().manual_seed(seed)
    if kind == "isotropic":
        return torch.randn(n, D, generator=g), torch.randn(N_QUERIES, D, generator=g)
    means = torch.randn(256, D, generator=g)

    def draw(m: int) -> torch.Tensor:
        lab = torch.randint(0, 256, (m,), generator=g)
        return means[lab] + 0.35 * torch.randn(m, D, generator=g)

    return draw(n), draw(N_QUERIES)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(spec: dict) -> dict:
    """One configuration (in a fresh process): returns timings, recall and memory."""
    from kernelens.kernels import KernelRidge
    from kernelens.sparse import SparseKernelLayer, knn_recall, make_index

    if spec.get("index") in ("faiss", "hnsw"):
        from kernelens.sparse import import_faiss

        import_faiss()  # the one-off import is not part of the build time
    torch.manual_seed(0)
    Z, X = _data(spec["n"], spec["data"])
    Y = torch.randn(spec["n"], C)
    base = _rss_mb()
    out: dict = {}
    if spec["what"] == "layer":
        from kernelens.sparse import median_neighbor_distance

        bw = median_neighbor_distance(Z, K)
        t0 = time.perf_counter()
        layer = SparseKernelLayer(Z, Y, k=K, bandwidth=bw, reg=1e-3, index=spec["index"])
        layer.center_features()  # builds the index
        out["build_s"] = time.perf_counter() - t0
        with torch.no_grad():
            t = time_call(lambda: layer(X), warmup=1, repeats=3)
        out["query_s"] = t.median
    elif spec["what"] == "krr":
        Zd, Xd, Yd = Z.double().numpy(), X.double().numpy(), Y.double().numpy()
        krr = KernelRidge("gaussian", bandwidth=spec["bandwidth"], alpha=1e-3)
        t0 = time.perf_counter()
        krr.fit(Zd, Yd)
        out["build_s"] = time.perf_counter() - t0
        out["query_s"] = time_call(lambda: krr.predict(Xd), warmup=1, repeats=3).median
    elif spec["what"] == "recall":
        import kernelens.sparse.neighbors.base as nb

        scanned = [0]
        scan = nb.NeighborIndex._scan

        def counting_scan(self, Q, *args):  # type: ignore[no-untyped-def]
            scanned[0] += Q.shape[0]
            return scan(self, Q, *args)

        nb.NeighborIndex._scan = counting_scan  # type: ignore[method-assign]
        _, exact = make_index("torch").build(Z).search(X, K)
        out["torch_scanned"] = scanned[0] / len(X)
        _, flat = make_index("faiss").build(Z).search(X, K)
        out["identical"] = bool(torch.equal(flat, exact))
        hnsw = make_index("hnsw").build(Z)
        for ef in (64, 128, 256):
            hnsw.ef_search = ef
            t = time_call(lambda: hnsw.search(X, K), warmup=1, repeats=3)
            out[f"recall_{ef}"] = knn_recall(t.value[1], exact)
            out[f"query_s_{ef}"] = t.median
    else:  # search alone
        t0 = time.perf_counter()
        index = make_index(spec["index"]).build(Z)
        out["build_s"] = time.perf_counter() - t0
        t = time_call(lambda: index.search(X, K), warmup=1, repeats=3)
        out["query_s"] = t.median
        _, exact = make_index("torch").build(Z).search(X, K)
        out["recall"] = knn_recall(t.value[1], exact)
    out["peak_mb"] = _peak_mb() - base
    return out


def _spawn(spec: dict) -> dict:
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.sparse", "--one", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"configuration {spec} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_layer(sizes: list[int], krr_max: int) -> list[list[object]]:
    rows: list[list[object]] = []
    for n in sizes:
        for index in ("torch", "faiss", "hnsw"):
            r = _spawn({"what": "layer", "n": n, "index": index, "data": "clustered"})
            rows.append([n, f"SK layer, {index} search", r["build_s"], r["query_s"], r["peak_mb"]])
        if n <= krr_max:
            from kernelens.sparse import median_neighbor_distance

            bw = median_neighbor_distance(_data(n, "clustered")[0], K)
            r = _spawn({"what": "krr", "n": n, "data": "clustered", "bandwidth": bw})
            rows.append([n, "exact KRR (dense, float64)", r["build_s"], r["query_s"], r["peak_mb"]])
    return rows


def bench_search(sizes: list[int], isotropic_n: int) -> list[list[object]]:
    rows: list[list[object]] = []
    configs = [(n, "clustered") for n in sizes] + [(isotropic_n, "isotropic")]
    for n, data in configs:
        for index in ("torch", "faiss", "hnsw"):
            r = _spawn({"what": "search", "n": n, "index": index, "data": data})
            rows.append([n, data, index, r["build_s"], r["query_s"], r["recall"], r["peak_mb"]])
    return rows


def bench_recall(sizes: list[int]) -> list[list[object]]:
    rows: list[list[object]] = []
    for data in ("clustered", "isotropic"):
        for n in sizes:
            r = _spawn({"what": "recall", "n": n, "data": data})
            rows.append(
                [n, data, r["identical"], r["torch_scanned"]]
                + [v for ef in (64, 128, 256) for v in (r[f"recall_{ef}"], r[f"query_s_{ef}"])]
            )
    return rows


def _growth(rows: list[list[object]], label: str, col: int) -> float:
    pts = sorted((r[0], r[col]) for r in rows if r[1] == label)
    return pts[-1][1] / pts[0][1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="n up to 20k only")
    p.add_argument("--record", action="store_true", help="write the results to BENCHMARKS.md")
    p.add_argument("--recall", action="store_true", help="HNSW recall and exact agreement only")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    if args.recall:
        sizes = [5000, 20000] if args.quick else [5000, 20000, 50000]
        body = (
            f"k = {K}, d = {D}, {N_QUERIES} queries, float32; HNSW M = 32, efConstruction = 40. "
            "Every backend's candidates (k + max(8, k/4) of them) are re-ranked by the "
            "reference distances, ties by the lowest index. 'identical' says whether faiss "
            "flat returned exactly the torch backend's neighbours; 'scanned' is the share of "
            "rows whose candidates could not be proven (near ties at the k-th place) and were "
            "answered by the exact scan. Recall@32 of HNSW against exact search, and its time "
            "per 1,000 queries, for efSearch 64 (the default), 128 and 256.\n\n"
            + markdown_table(
                [
                    "n",
                    "data",
                    "identical",
                    "scanned",
                    "recall ef64",
                    "s ef64",
                    "recall ef128",
                    "s ef128",
                    "recall ef256",
                    "s ef256",
                ],
                bench_recall(sizes),
            )
        )
        print(body)
        if args.record:
            record(RECALL_TITLE, body)
        return
    sizes = [1000, 5000, 20000] if args.quick else [1000, 5000, 10000, 20000, 50000, 200000]
    layer_rows = bench_layer(sizes, krr_max=10000)
    search_rows = bench_search(sizes, isotropic_n=sizes[-1] if args.quick else 50000)
    hnsw = next(r for r in layer_rows if r[0] == sizes[-1] and r[1] == "SK layer, hnsw search")
    body = (
        f"SK layer: k = {K}, Gaussian kernel (bandwidth = median distance to the {K}-th "
        f"neighbour), reg 1e-3, float32, c = {C} outputs, d = {D}, {N_QUERIES} queries, "
        "clustered data. 'build s' is the index build (SK) or the fit (KRR); 'query s' the "
        "median of 3 runs of all 1,000 queries (search + local solves; KRR: K(X, Z) alpha); "
        "peak MiB is the resident-set growth of a fresh process over its state after the data "
        "were created.\n\n"
        + markdown_table(
            ["n centers", "method", "build s", "s per 1,000 queries", "peak MiB"], layer_rows
        )
        + f"\n\nGrowth of the query time from n = {sizes[0]} to n = {sizes[-1]}: torch "
        f"{_growth(layer_rows, 'SK layer, torch search', 3):.1f}x, faiss "
        f"{_growth(layer_rows, 'SK layer, faiss search', 3):.1f}x, HNSW "
        f"{_growth(layer_rows, 'SK layer, hnsw search', 3):.1f}x (n grew "
        f"{sizes[-1] / sizes[0]:.0f}x). SK layer with HNSW at n = {sizes[-1]}: "
        f"{hnsw[3]:.3f} s per 1,000 queries (goal < 1 s). The torch search's memory is its "
        "distance tile, bounded by the memory budget (default 2 GiB; pass memory_budget= to "
        "lower it).\n\n"
        f"Neighbour search alone (k = {K}, float32), recall@{K} against exact search "
        "(HNSW: M = 32, efConstruction = 40, efSearch = 64):\n\n"
        + markdown_table(
            ["n", "data", "backend", "build s", "s per 1,000 queries", "recall", "peak MiB"],
            search_rows,
        )
    )
    print(body)
    if args.record:
        record(TITLE, body)


if __name__ == "__main__":
    main()
