"""What the kernel estimators share beyond :mod:`kernelens._sklearn`: building their kernel.

Inputs, dtypes, parameter tables and the classifier behaviour live in the neutral
:mod:`kernelens._sklearn` (shared with :mod:`kernelens.rfm`); this adds the ``kernel``,
``bandwidth`` and ``kernel_params`` hyper-parameters, resolved by
:func:`kernelens.kernels.resolve_kernel`, and ``kernel="precomputed"``.
"""

from __future__ import annotations

from typing import Any

import torch

from .._sklearn import Constraint, TorchEstimatorMixin
from .base import Kernel
from .registry import KERNELS, resolve_kernel

__all__ = ["KERNEL_CONSTRAINTS", "KernelEstimatorMixin"]


def _check_kernel(value: Any, name: str) -> None:
    if isinstance(value, Kernel):
        return
    if not isinstance(value, str) or value not in (*KERNELS, "precomputed"):
        raise ValueError(
            f"unknown {name} {value!r}; pass a Kernel, 'precomputed' or one of the names: "
            f"{', '.join(map(repr, KERNELS))}."
        )


def _check_kernel_params(value: Any, name: str) -> None:
    if value is not None and not isinstance(value, dict):
        raise TypeError(f"{name} must be None or a dict of kernel arguments, got {value!r}.")


#: The table entries of ``kernel``, ``bandwidth`` and ``kernel_params`` (bandwidth: checked
#: by :func:`~kernelens.kernels.resolve_kernel`, which knows which kernels have one).
KERNEL_CONSTRAINTS: dict[str, Constraint] = {
    "kernel": Constraint("a kernel name, a Kernel or 'precomputed'", _check_kernel),
    "kernel_params": Constraint("None or a dict", _check_kernel_params),
}


class KernelEstimatorMixin(TorchEstimatorMixin):
    """Kernel construction and Gram computation for kernel estimators.

    Subclasses define the hyper-parameters ``kernel``, ``bandwidth``, ``kernel_params``,
    ``dtype`` and ``memory_budget`` in their ``__init__``.
    """

    kernel: str | Kernel
    bandwidth: float | None
    kernel_params: dict[str, Any] | None
    memory_budget: int | None

    def _validate_params(self) -> None:
        super()._validate_params()
        self._make_kernel()  # bandwidth and kernel_params, in their kernel's context

    def _make_kernel(self) -> Kernel | None:
        """The kernel object, or None for ``kernel="precomputed"``."""
        if isinstance(self.kernel, str) and self.kernel == "precomputed":
            return None
        return resolve_kernel(self.kernel, self.bandwidth, self.kernel_params)

    def _gram(self, X1: torch.Tensor, X2: torch.Tensor | None = None) -> torch.Tensor:
        """``K(X1, X2)`` (dense); for ``precomputed`` X1 already is the Gram."""
        if self.kernel_ is None:
            return X1
        return self.kernel_(X1, X2)

    def __sklearn_tags__(self):  # type: ignore[override]
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = isinstance(self.kernel, str) and self.kernel == "precomputed"
        return tags
