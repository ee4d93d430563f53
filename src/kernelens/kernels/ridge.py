"""Kernel ridge regression and one-hot kernel classification with a scikit-learn API."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from .._validation import check_choice
from ..linalg import jittered_cholesky
from .base import Kernel
from .sklearn_base import KernelEstimatorMixin, wrap_like

__all__ = ["KernelClassifier", "KernelRidge"]

SOLVERS = ("auto", "cholesky")


class KernelRidge(RegressorMixin, KernelEstimatorMixin):
    """Kernel ridge regression: ``(K + alpha I) coef = y``, ``f(x) = K(x, X) coef``.

    Args:
        kernel: a kernel name (see :data:`kernelens.kernels.KERNELS`), a
            :class:`~kernelens.kernels.Kernel`, or ``"precomputed"`` (then ``X`` is the
            ``[n, n]`` training Gram in ``fit`` and ``[m, n]`` test-train Gram in ``predict``).
        bandwidth: kernel bandwidth ``L`` for named kernels that have one.
        alpha: ridge ``>= 0`` (0 interpolates; jitter is added if the Gram is singular).
        kernel_params: extra constructor arguments of a named kernel (e.g. ``{"M": M}``).
        solver: ``"cholesky"`` (dense Gram) or ``"auto"`` (the same while the Gram fits the
            memory budget, else an error that says how large ``n`` may be).
        dtype: ``"float64"`` (default) or ``"float32"`` for the computation.
        memory_budget: bytes for Grams and tiles (default: a quarter of free RAM).

    Attributes:
        dual_coef_: ``[n]`` or ``[n, k]`` coefficients.
        X_fit_: ``[n, d]`` training inputs (the Gram for ``precomputed``).
        kernel_: the kernel object used (None for ``precomputed``).
    """

    def __init__(
        self,
        kernel: str | Kernel = "laplace",
        *,
        bandwidth: float = 1.0,
        alpha: float = 1.0,
        kernel_params: dict[str, Any] | None = None,
        solver: str = "auto",
        dtype: str = "float64",
        memory_budget: int | None = None,
    ) -> None:
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.alpha = alpha
        self.kernel_params = kernel_params
        self.solver = solver
        self.dtype = dtype
        self.memory_budget = memory_budget

    # -- fitting ------------------------------------------------------------------------------
    def _solve(self, K: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Solve ``(K + alpha I) C = Y``; return ``(C, L)`` with ``L`` the Cholesky factor."""
        alpha = self._check_regularisation(self.alpha, "alpha")
        check_choice(self.solver, "solver", SOLVERS)
        n = K.shape[0]
        if not self._dense_fits(n):
            raise MemoryError(
                f"the {n} x {n} Gram does not fit memory_budget={self.memory_budget}; raise "
                "memory_budget or subsample (iterative solvers: kernelens.rfm / kernelens.linalg)."
            )
        K.diagonal().add_(alpha)  # K is ours and used only here: regularise in place
        L, _ = jittered_cholesky(K)
        return torch.cholesky_solve(Y, L), L

    def _fit_targets(self, X: Any, Y: np.ndarray) -> None:
        """Common fit path on validated ``X`` and 2-D targets ``Y [n, k]``."""
        self.kernel_ = self._make_kernel()
        Xt = self._tensor(X)
        if self.kernel_ is None and Xt.shape[0] != Xt.shape[1]:
            raise ValueError(
                f"kernel='precomputed' needs a square training Gram, got shape {tuple(Xt.shape)}."
            )
        K = Xt.clone() if self.kernel_ is None else self._gram(Xt)
        coef, self._cholesky = self._solve(K, self._tensor(Y))
        self.X_fit_ = Xt
        self._coef2d = coef

    def fit(self, X: Any, y: Any) -> KernelRidge:
        """Fit on ``X [n, d]`` (numpy or torch) and ``y [n]`` or ``[n, k]``."""
        X, y = self._validate_X(X, reset=True, y=y, y_numeric=True, multi_output=True)
        Y = y[:, None] if y.ndim == 1 else y
        self._fit_targets(X, Y)
        self.dual_coef_ = self._coef2d[:, 0] if y.ndim == 1 else self._coef2d
        return self

    def _scores(self, X: Any) -> torch.Tensor:
        """``K(X, X_fit) @ coef`` -> ``[m, k]`` computed in tiles."""
        check_is_fitted(self, "X_fit_")
        Xv = self._tensor(self._validate_X(X, reset=False))
        if self.kernel_ is None:
            if Xv.shape[1] != self.X_fit_.shape[0]:
                raise ValueError(
                    f"kernel='precomputed': X must be [m, {self.X_fit_.shape[0]}] "
                    f"(test x train Gram), got {tuple(Xv.shape)}."
                )
            return Xv @ self._coef2d
        return self.kernel_.matvec(Xv, self.X_fit_, self._coef2d, memory_budget=self.memory_budget)

    def predict(self, X: Any) -> Any:
        """Predictions ``[m]`` or ``[m, k]`` (numpy for numpy input, tensor for tensor input)."""
        scores = self._scores(X)
        out = scores[:, 0] if self.dual_coef_.ndim == 1 else scores
        return wrap_like(out, X)


class KernelClassifier(ClassifierMixin, KernelRidge):
    """Classification by kernel ridge regression on one-hot targets.

    ``decision_function`` gives the regression scores ``[m, C]``; ``predict`` their argmax;
    ``predict_proba`` a softmax of ``scores / temperature_``. The temperature is fitted by
    minimising the negative log-likelihood of the *leave-one-out* scores, which kernel ridge
    regression gives in closed form from the same Cholesky factor
    (``f_loo = Y - coef / diag((K + alpha I)^-1)``), so calibration needs no held-out split
    and is not fooled by the training fit. Same arguments as :class:`KernelRidge`.

    Attributes:
        classes_: the class labels (any hashable, e.g. strings).
        temperature_: the fitted softmax temperature.
    """

    _multi_output = False

    def fit(self, X: Any, y: Any) -> KernelClassifier:
        X, y = self._validate_X(X, reset=True, y=y)
        check_classification_targets(y)
        enc = LabelEncoder().fit(y)
        self.classes_ = enc.classes_
        codes = enc.transform(y)
        Y = np.eye(len(self.classes_))[codes]
        self._fit_targets(X, Y)
        self.dual_coef_ = self._coef2d
        self.temperature_ = self._fit_temperature(codes)
        return self

    def _fit_temperature(self, codes: np.ndarray) -> float:
        """Temperature minimising the NLL of the leave-one-out scores."""
        n = self._cholesky.shape[0]
        if n < 2 or len(self.classes_) < 2:
            return 1.0
        Linv = torch.linalg.solve_triangular(
            self._cholesky, torch.eye(n, dtype=self._cholesky.dtype), upper=False
        )
        inv_diag = (Linv * Linv).sum(dim=0)
        Y = torch.as_tensor(np.eye(len(self.classes_))[codes], dtype=self._coef2d.dtype)
        loo = (Y - self._coef2d / inv_diag[:, None]).numpy()
        idx = np.arange(n)

        def nll(log_t: float) -> float:
            z = loo / np.exp(log_t)
            z = z - z.max(axis=1, keepdims=True)
            return float(-(z[idx, codes] - np.log(np.exp(z).sum(axis=1))).mean())

        res = minimize_scalar(nll, bounds=(-8.0, 8.0), method="bounded")
        return float(np.exp(res.x))

    def decision_function(self, X: Any) -> Any:
        """Regression scores ``[m, C]`` (``[m]`` for two classes: score of class 1 minus 0)."""
        check_is_fitted(self, "classes_")
        s = self._scores(X)
        if len(self.classes_) == 2:
            s = s[:, 1] - s[:, 0]
        return wrap_like(s, X)

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities ``[m, C]``: ``softmax(scores / temperature_)``."""
        check_is_fitted(self, "classes_")
        p = torch.softmax(self._scores(X) / self.temperature_, dim=1)
        return wrap_like(p, X)

    def predict(self, X: Any) -> Any:
        """The most likely class for each row of ``X``."""
        check_is_fitted(self, "classes_")
        return self.classes_[self._scores(X).argmax(dim=1).cpu().numpy()]
