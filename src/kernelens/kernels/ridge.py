"""Kernel ridge regression and one-hot kernel classification with a scikit-learn API."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from .._persist import PersistMixin
from .._sklearn import (
    DTYPES,
    CalibratedClassifierMixin,
    Constraint,
    choice,
    memory_budget,
    nonnegative,
    optional,
    positive,
    wrap_like,
)
from ..linalg import conjugate_gradient, jittered_cholesky, solve_kernel_system
from ..linalg.kernel_solve import SOLVERS, resolve_solver
from .base import Kernel
from .calibration import loo_temperature
from .sklearn_base import KERNEL_CONSTRAINTS, KernelEstimatorMixin

__all__ = ["KernelClassifier", "KernelRidge"]


class KernelRidge(PersistMixin, RegressorMixin, KernelEstimatorMixin):
    """Kernel ridge regression: ``(K + alpha I) coef = y``, ``f(x) = K(x, X) coef``.

    Args:
        kernel: a kernel name (see :data:`kernelens.kernels.KERNELS`), a
            :class:`~kernelens.kernels.Kernel`, or ``"precomputed"`` (then ``X`` is the
            ``[n, n]`` training Gram in ``fit`` and ``[m, n]`` test-train Gram in ``predict``).
        bandwidth: kernel bandwidth ``L`` (None: 1.0 for named kernels that have one, a
            :class:`~kernelens.kernels.Kernel`'s own; a number replaces an instance's; see
            :func:`~kernelens.kernels.resolve_kernel`).
        alpha: ridge ``>= 0`` (0 interpolates; jitter is added if the Gram is singular).
        kernel_params: extra constructor arguments of a named kernel (e.g. ``{"M": M}``).
        solver: ``"cholesky"`` (dense Gram, exact), ``"cg"`` (matrix-free conjugate
            gradients on the tiled Gram with an EigenPro preconditioner, see
            :func:`kernelens.linalg.solve_kernel_system`), ``"eigenpro"`` (EigenPro
            iteration), or ``"auto"``: Cholesky while three ``n x n`` matrices fit the memory
            budget, else CG (:func:`kernelens.linalg.kernel_solve.resolve_solver`).
            ``precomputed`` Grams support ``"auto"``, ``"cholesky"``, ``"cg"``.
        tol: relative residual target of the iterative solvers (None: their dtype default).
        dtype: ``"float64"`` (default) or ``"float32"`` for the computation.
        memory_budget: bytes for Grams and tiles (default: 2 GiB, or $KERNELENS_MEMORY_BUDGET).

    Attributes:
        dual_coef_: ``[n]`` or ``[n, k]`` coefficients.
        X_fit_: ``[n, d]`` training inputs (the Gram for ``precomputed``).
        kernel_: the kernel object used (None for ``precomputed``).
        solver_: the solver that ran (``route_`` is its deprecated name).
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        **KERNEL_CONSTRAINTS,
        "bandwidth": optional(positive),
        "alpha": nonnegative,
        "solver": choice(SOLVERS),
        "tol": optional(positive),
        "dtype": choice(DTYPES),
        "memory_budget": memory_budget,
    }

    def __init__(
        self,
        kernel: str | Kernel = "laplace",
        *,
        bandwidth: float | None = None,
        alpha: float = 1.0,
        kernel_params: dict[str, Any] | None = None,
        solver: str = "auto",
        tol: float | None = None,
        dtype: str = "float64",
        memory_budget: int | None = None,
    ) -> None:
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.alpha = alpha
        self.kernel_params = kernel_params
        self.solver = solver
        self.tol = tol
        self.dtype = dtype
        self.memory_budget = memory_budget

    # -- fitting ------------------------------------------------------------------------------
    def _route(self, n: int) -> str:
        """The solver actually used for ``n`` training points."""
        if self.kernel_ is None and self.solver == "eigenpro":
            raise ValueError(
                "solver='eigenpro' needs kernel evaluations; with kernel='precomputed' use "
                "'cholesky' or 'cg'."
            )
        return resolve_solver(self.solver, n, self._torch_dtype(), self.memory_budget)

    @property
    def route_(self) -> str:
        """Deprecated name of ``solver_`` (removed in the next release)."""
        warnings.warn("route_ is deprecated; use solver_.", FutureWarning, stacklevel=2)
        return self.solver_

    def _solve_dense(self, K: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """``(K + alpha I)^-1 Y`` by Cholesky, regularising ``K`` in place; keeps the factor."""
        K.diagonal().add_(self.alpha)
        self._cholesky, _ = jittered_cholesky(K)
        return torch.cholesky_solve(Y, self._cholesky)

    def _solve_iterative(self, Y: torch.Tensor) -> torch.Tensor:
        """``(K + alpha I)^-1 Y`` matrix-free (CG or EigenPro) on the training inputs."""
        if self.kernel_ is None:
            A = self.X_fit_ + self.alpha * torch.eye(self.X_fit_.shape[0], dtype=self.X_fit_.dtype)
            return conjugate_gradient(A, Y, tol=self.tol).x
        res = solve_kernel_system(
            self.kernel_,
            self.X_fit_,
            Y,
            shift=self.alpha,
            solver=self.solver_,
            tol=self.tol,
            memory_budget=self.memory_budget,
        )
        return res.x

    def _fit_targets(self, X: Any, Y: np.ndarray) -> None:
        """Common fit path on validated ``X`` and 2-D targets ``Y [n, k]``."""
        self.kernel_ = self._make_kernel()
        Xt = self._tensor(X)
        if self.kernel_ is None and Xt.shape[0] != Xt.shape[1]:
            raise ValueError(
                f"kernel='precomputed' needs a square training Gram, got shape {tuple(Xt.shape)}."
            )
        self.X_fit_ = Xt
        self.solver_ = self._route(Xt.shape[0])
        self._cholesky = None
        if self.solver_ == "cholesky":
            K = Xt.clone() if self.kernel_ is None else self._gram(Xt)
            self._coef2d = self._solve_dense(K, self._tensor(Y))
        else:
            self._coef2d = self._solve_iterative(self._tensor(Y))

    def fit(self, X: Any, y: Any) -> KernelRidge:
        """Fit on ``X [n, d]`` (numpy or torch) and ``y [n]`` or ``[n, k]``."""
        self._validate_params()
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


class KernelClassifier(CalibratedClassifierMixin, ClassifierMixin, KernelRidge):
    """Classification by kernel ridge regression on one-hot targets.

    ``decision_function`` gives the regression scores ``[m, C]``; ``predict`` their argmax;
    ``predict_proba`` a softmax of ``scores / temperature_``. The temperature is fitted by
    minimising the negative log-likelihood of the *leave-one-out* scores, which kernel ridge
    regression gives in closed form from the same Cholesky factor
    (``f_loo = Y - coef / diag((K + alpha I)^-1)``), so calibration needs no held-out split
    and is not fooled by the training fit (:mod:`kernelens.kernels.calibration`, shared with
    :class:`~kernelens.rfm.RFMClassifier`). Same arguments as :class:`KernelRidge`.

    Attributes:
        classes_: the class labels (any hashable, e.g. strings).
        temperature_: the fitted softmax temperature.
    """

    def fit(self, X: Any, y: Any) -> KernelClassifier:
        """Fit on ``X [n, d]`` and labels ``y [n]`` (numbers or strings)."""
        self._validate_params()
        X, y = self._validate_X(X, reset=True, y=y)
        codes, Y = self._encode_labels(y)
        self._fit_targets(X, Y)
        self.dual_coef_ = self._coef2d
        self.temperature_ = loo_temperature(
            self._tensor(Y),
            self._coef2d,
            codes,
            factor=self._cholesky,
            solve=self._solve_iterative,
        )
        return self
