"""The Kernel interface shared by every classic kernel in kernelens.

A kernel ``k(x, z)`` maps two batches ``X1 [N1, d]`` and ``X2 [N2, d]`` to the Gram matrix
``[N1, N2]``. ``matvec`` applies the Gram to vectors in tiles, so the ``N1 x N2`` matrix is
never formed; ``operator`` wraps that as a :class:`~kernelens.linalg.LinearOperator`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from .._memory import element_size, resolve_memory_budget, tile_size
from .._progress import progress
from .._validation import as_tensor, check_same_device_dtype
from ..linalg.operator import LinearOperator

__all__ = ["Kernel"]

#: Temporaries a kernel evaluation holds per Gram entry (distances, exp, output).
_GRAM_TEMPORARIES = 4
#: Largest Gram tile (bytes, temporaries included) of a matvec, whatever the budget: the
#: element-wise passes over a tile run about twice as fast when it stays in cache (measured:
#: n = 10000, d = 20, float32 Laplace matvec 0.44 s with 16 MiB tiles vs 0.99 s in one tile).
_MAX_TILE_BYTES = 32 << 20


class Kernel(ABC):
    """A positive semi-definite kernel on ``R^d``.

    Subclasses implement :meth:`_gram` (the dense Gram of two batches) and may override
    :meth:`diag` when ``k(x, x)`` has a closed form. Autograd flows through every method.
    """

    #: Registry name of the kernel (used by :func:`kernelens.kernels.make_kernel`).
    name: str = "kernel"
    #: Whether the constructor takes a ``bandwidth``.
    has_bandwidth: bool = False

    # -- public API ------------------------------------------------------------------------
    def __call__(self, X1: torch.Tensor, X2: torch.Tensor | None = None) -> torch.Tensor:
        """Gram matrix ``[N1, N2]`` of ``X1 [N1, d]`` and ``X2 [N2, d]`` (``X2=None``: X1)."""
        X1, X2 = self._check_pair(X1, X2)
        return self._gram(X1, X1 if X2 is None else X2, same=X2 is None)

    def diag(self, X: torch.Tensor) -> torch.Tensor:
        """``k(x_i, x_i)`` for ``X [N, d]`` -> ``[N]``, without forming the Gram."""
        X = as_tensor(X, "X", ndim=2)
        return torch.stack([self._gram(x[None], x[None], same=True)[0, 0] for x in X])

    def matvec(
        self,
        X1: torch.Tensor,
        X2: torch.Tensor | None,
        V: torch.Tensor,
        *,
        memory_budget: int | None = None,
        show_progress: bool | None = None,
        client: Any = None,
    ) -> torch.Tensor:
        """``K(X1, X2) @ V`` in tiles, never forming the full Gram.

        Args:
            X1: ``[N1, d]``.
            X2: ``[N2, d]`` or None for ``X1``.
            V: ``[N2]`` or ``[N2, k]``.
            memory_budget: bytes a tile of the Gram (with temporaries) may use.
            show_progress: force the progress bar on or off (default: on a terminal).
            client: a :class:`distributed.Client`: row tiles run on its workers
                (:mod:`kernelens.distributed`); None computes in-process.

        Returns:
            ``[N1]`` or ``[N1, k]``, matching ``V``.
        """
        if client is not None:
            op = self.operator(X1, X2, memory_budget=memory_budget, client=client)
            op.show_progress = show_progress
            return op.matvec(as_tensor(V, "V", ndim=(1, 2), dtype=X1.dtype))
        X1, X2 = self._check_pair(X1, X2)
        Xb = X1 if X2 is None else X2
        V = as_tensor(V, "V", ndim=(1, 2), dtype=X1.dtype, device=X1.device)
        if V.shape[0] != Xb.shape[0]:
            raise ValueError(
                f"V has {V.shape[0]} rows but X2 has {Xb.shape[0]} samples; they must match."
            )
        vec = V.ndim == 1
        V2 = V[:, None] if vec else V
        n1, n2 = X1.shape[0], Xb.shape[0]
        itemsize = element_size(X1.dtype)
        budget = min(resolve_memory_budget(memory_budget), _MAX_TILE_BYTES)
        cols = tile_size(n2, _GRAM_TEMPORARIES * itemsize * min(n1, 4096), budget)
        rows = tile_size(n1, _GRAM_TEMPORARIES * itemsize * cols, budget)
        out = []
        starts = range(0, n1, rows)
        for r0 in progress(starts, desc=f"{self.name} matvec", enable=show_progress):
            xa = X1[r0 : r0 + rows]
            acc = None
            for c0 in range(0, n2, cols):
                block = self._gram(xa, Xb[c0 : c0 + cols], same=False)
                part = block @ V2[c0 : c0 + cols]
                acc = part if acc is None else acc + part
            out.append(acc)
        res = torch.cat(out, dim=0)
        return res[:, 0] if vec else res

    def operator(
        self,
        X1: torch.Tensor,
        X2: torch.Tensor | None = None,
        *,
        memory_budget: int | None = None,
        client: Any = None,
    ) -> LinearOperator:
        """``K(X1, X2)`` as a matrix-free :class:`LinearOperator` (symmetric when X2 is None).

        Its products draw no progress bar of their own: iterative solvers that call them many
        times show one bar for their iterations instead. With a :class:`distributed.Client`,
        ``X1`` and ``X2`` go to its workers once and each product runs there in row tiles
        (:class:`kernelens.distributed.DistributedKernelOperator`, ``memory_budget`` per worker).
        """
        X1, X2 = self._check_pair(X1, X2)
        if client is not None:
            from ..distributed import DistributedKernelOperator

            return DistributedKernelOperator(
                self, X1, X2, client=client, memory_budget=memory_budget
            )
        Xb = X1 if X2 is None else X2

        def mm(V: torch.Tensor) -> torch.Tensor:
            return self.matvec(X1, X2, V, memory_budget=memory_budget, show_progress=False)

        def rmm(U: torch.Tensor) -> torch.Tensor:
            return self.matvec(Xb, X1, U, memory_budget=memory_budget, show_progress=False)

        return LinearOperator(
            (X1.shape[0], Xb.shape[0]),
            mm,
            rmatmat=None if X2 is None else rmm,
            dtype=X1.dtype,
            device=X1.device,
            symmetric=X2 is None,
        )

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._repr_params().items())
        return f"{type(self).__name__}({params})"

    # -- for subclasses -----------------------------------------------------------------------
    @abstractmethod
    def _gram(self, X1: torch.Tensor, X2: torch.Tensor, *, same: bool) -> torch.Tensor:
        """Dense Gram ``[N1, N2]``; ``same`` is True when X2 is X1 (symmetry may be used)."""

    def _repr_params(self) -> dict[str, object]:
        return {}

    def _check_pair(
        self, X1: torch.Tensor, X2: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        X1 = as_tensor(X1, "X1", ndim=2)
        if X2 is not None:
            X2 = as_tensor(X2, "X2", ndim=2)
            check_same_device_dtype({"X1": X1, "X2": X2})
            if X2.shape[1] != X1.shape[1]:
                raise ValueError(
                    f"X1 has {X1.shape[1]} features but X2 has {X2.shape[1]}; "
                    "both must have the same number of columns."
                )
        return X1, X2
