"""What the kernel estimators share: scikit-learn input handling and kernel construction.

Inputs may be numpy arrays or torch tensors; they are validated with scikit-learn's own
``validate_data`` (so error messages are the familiar scikit-learn ones) and converted to
torch tensors of the estimator's ``dtype``. Predictions come back as numpy arrays for numpy
input and as tensors for tensor input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import validate_data

from .._memory import element_size, resolve_memory_budget
from .._validation import check_choice, check_nonnegative
from .base import Kernel
from .registry import KERNELS, resolve_kernel

__all__ = ["KernelEstimatorMixin", "to_numpy", "wrap_like"]

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def to_numpy(x: Any) -> Any:
    """Torch tensors become numpy arrays (detached, on CPU); anything else is returned as is."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return x


def wrap_like(value: np.ndarray | torch.Tensor, like: Any) -> Any:
    """Return ``value`` as a tensor if ``like`` is a tensor, else as a numpy array."""
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(value, device=like.device)
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


class KernelEstimatorMixin(BaseEstimator):
    """Kernel construction, input conversion and Gram computation for kernel estimators.

    Subclasses define the hyper-parameters ``kernel``, ``bandwidth``, ``kernel_params``,
    ``dtype`` and ``memory_budget`` in their ``__init__``.
    """

    kernel: str | Kernel
    bandwidth: float | None
    kernel_params: dict[str, Any] | None
    dtype: str
    memory_budget: int | None
    #: Whether ``y`` may be ``[n, k]`` (regressors) rather than only ``[n]``.
    _multi_output: bool = True

    def _torch_dtype(self) -> torch.dtype:
        return DTYPES[check_choice(self.dtype, "dtype", DTYPES)]

    def _make_kernel(self) -> Kernel | None:
        """The kernel object, or None for ``kernel="precomputed"``."""
        if isinstance(self.kernel, str) and self.kernel == "precomputed":
            return None
        if isinstance(self.kernel, str):
            check_choice(self.kernel, "kernel", [*KERNELS, "precomputed"])
        return resolve_kernel(self.kernel, self.bandwidth, self.kernel_params)

    def _validate_X(self, X: Any, *, reset: bool, y: Any = "no_validation", **kw: Any) -> Any:
        """scikit-learn validation of numpy or torch input (returns numpy; ``(X, y)`` when
        ``y`` is given, as ``validate_data`` does)."""
        return validate_data(self, to_numpy(X), to_numpy(y), reset=reset, dtype=np.float64, **kw)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=self._torch_dtype())

    def _gram(self, X1: torch.Tensor, X2: torch.Tensor | None = None) -> torch.Tensor:
        """``K(X1, X2)`` (dense); for ``precomputed`` X1 already is the Gram."""
        if self.kernel_ is None:
            return X1
        return self.kernel_(X1, X2)

    def _check_regularisation(self, value: float, name: str) -> float:
        return check_nonnegative(value, name)

    def _dense_fits(self, n: int) -> bool:
        """Whether an ``n x n`` Gram (and its factor) fits in the memory budget."""
        need = 3 * n * n * element_size(self._torch_dtype())
        return need <= resolve_memory_budget(self.memory_budget)

    def __sklearn_tags__(self):  # type: ignore[override]
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = isinstance(self.kernel, str) and self.kernel == "precomputed"
        tags.target_tags.multi_output = self._multi_output
        return tags
