"""Dask clients: the embedded local cluster, thread settings on workers, and client checks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._validation import check_positive_int

__all__ = ["check_client", "local_client", "require_distributed"]

#: Seconds check_client waits for a worker to appear (a nanny restarts a crashed one in ~1 s).
_WORKER_WAIT_S = 5.0
_INSTALL_HINT = 'pip install "kernelens[scale]"  (installs dask[distributed])'


def require_distributed() -> Any:
    """Import :mod:`distributed`, or raise an ImportError that says how to install it."""
    try:
        import distributed
    except ImportError as err:  # pragma: no cover - the scale extra is part of dev
        raise ImportError(
            f"client= needs the Dask distributed scheduler, which is not installed: {_INSTALL_HINT}."
        ) from err
    return distributed


def set_worker_threads(client: Any, n_threads: int) -> None:
    """Make every current and future worker of ``client`` run torch on ``n_threads`` threads."""
    require_distributed()
    from ._plugin import TorchThreads

    client.register_plugin(TorchThreads(n_threads), name=TorchThreads.name)


@contextmanager
def local_client(
    n_workers: int = 2,
    threads_per_worker: int = 1,
    *,
    memory_limit: str | int | None = "auto",
    dashboard: bool = False,
    **cluster_kwargs: Any,
) -> Iterator[Any]:
    """An embedded :class:`distributed.LocalCluster` of worker *processes* and its client.

    Each worker runs torch on ``threads_per_worker`` threads (set by a worker plugin, so a
    restarted worker keeps the setting). The cluster and client close when the block ends.

    Args:
        n_workers: worker processes.
        threads_per_worker: Dask threads per worker, and torch's intra-op threads there.
        memory_limit: per-worker memory limit passed to LocalCluster ("auto": RAM / n_workers).
        dashboard: serve the scheduler's dashboard (needs bokeh). Off by default; the scheduler's
            HTTP server then takes a free port, so several embedded clusters never collide
            (``dashboard_address=None`` would mean Dask's default port 8787).
        **cluster_kwargs: passed to :class:`distributed.LocalCluster`.

    Yields:
        A :class:`distributed.Client` connected to the cluster.

    Example::

        with local_client(n_workers=2, threads_per_worker=1) as client:
            K = kernelens.empirical_ntk(model, x, output="trace", client=client)
    """
    n_workers = check_positive_int(n_workers, "n_workers")
    threads_per_worker = check_positive_int(threads_per_worker, "threads_per_worker")
    distributed = require_distributed()
    kwargs: dict[str, Any] = {
        "n_workers": n_workers,
        "threads_per_worker": threads_per_worker,
        "processes": True,
        "memory_limit": memory_limit,
        "dashboard_address": ":0",
        "scheduler_kwargs": {"dashboard": dashboard},
    }
    kwargs.update(cluster_kwargs)
    with distributed.LocalCluster(**kwargs) as cluster, distributed.Client(cluster) as client:
        set_worker_threads(client, threads_per_worker)
        yield client


def check_client(client: Any, name: str = "client") -> Any:
    """Check that ``client`` is a running :class:`distributed.Client` with workers.

    Raises:
        TypeError: not a Client.
        RuntimeError: the client is closed, or its cluster has no workers.
    """
    distributed = require_distributed()
    if not isinstance(client, distributed.Client):
        raise TypeError(
            f"{name} must be a distributed.Client (for example from "
            f"kernelens.distributed.local_client()), got {type(client).__name__}."
        )
    if client.status != "running":
        raise RuntimeError(
            f"{name} is {client.status}, not running: create a new client (e.g. with "
            "kernelens.distributed.local_client()) or pass client=None to compute in-process."
        )
    if not client.scheduler_info().get("workers"):
        try:  # the client's view of the workers refreshes periodically; ask the scheduler
            client.wait_for_workers(1, timeout=_WORKER_WAIT_S)
        except TimeoutError:
            pass
    if not client.scheduler_info().get("workers"):
        raise RuntimeError(
            f"{name} is connected to a scheduler with no workers: start workers "
            "(dask worker <scheduler-address>) or use kernelens.distributed.local_client()."
        )
    return client
