"""The worker plugin that fixes torch's thread count on Dask workers (imports distributed)."""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["TorchThreads"]


class TorchThreads(WorkerPlugin):
    """Sets ``torch.set_num_threads(n)`` (and BLAS pools through threadpoolctl) on every worker,
    including workers that a nanny restarts after a crash: plugins run again on each new one."""

    name = "kernelens-torch-threads"

    def __init__(self, n_threads: int) -> None:
        self.n_threads = int(n_threads)

    def setup(self, worker: Any) -> None:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(self.n_threads)
        self._limits = threadpool_limits(limits=self.n_threads)
