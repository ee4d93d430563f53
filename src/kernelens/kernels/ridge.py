"""Kernel ridge regression and one-hot kernel classification with a scikit-learn API."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from .._persist import PersistMixin
from .._validation import check_choice
from ..linalg import conjugate_gradient, jittered_cholesky, solve_kernel_system
from .base import Kernel
from .calibration import fit_temperature
from .sklearn_base import KernelEstimatorMixin, wrap_like

__all__ = ["KernelClassifier", "KernelRidge"]

SOLVERS = ("auto", "cholesky", "cg", "eigenpro")
#: Training points whose exact leave-one-out scores calibrate the classifier's temperature
#: when an iterative solver is used (one block CG solve with this many right-hand sides).
LOO_CALIBRATION_POINTS = 256


class KernelRidge(PersistMixin, RegressorMixin, KernelEstimatorMixin):
    """Kernel ridge regression: ``(K + alpha I) coef = y``, ``f(x) = K(x, X) coef``.

    Args:
        kernel: a kernel name (see :data:`kernelens.kernels.KERNELS`), a
            :class:`~kernelens.kernels.Kernel`, or ``"precomputed"`` (then ``X`` is the
            ``[n, n]`` training Gram in ``fit`` and ``[m, n]`` test-train Gram in ``predict``).
        bandwidth: kernel bandwidth ``L`` for named kernels that have one.
        alpha: ridge ``>= 0`` (0 interpolates; jitter is added if the Gram is singular).
        kernel_params: extra constructor arguments of a named kernel (e.g. ``{"M": M}``).
        solver: ``"cholesky"`` (dense Gram, exact), ``"cg"`` (matrix-free conjugate
            gradients on the tiled Gram with an EigenPro preconditioner, see
            :func:`kernelens.linalg.solve_kernel_system`), ``"eigenpro"`` (EigenPro
            iteration), or ``"auto"``: Cholesky while three ``n x n`` matrices fit the memory
            budget, else CG. ``precomputed`` Grams support ``"auto"``, ``"cholesky"``, ``"cg"``.
        tol: relative residual target of the iterative solvers (None: their dtype default).
        dtype: ``"float64"`` (default) or ``"float32"`` for the computation.
        memory_budget: bytes for Grams and tiles (default: 2 GiB, or $KERNELENS_MEMORY_BUDGET).

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
        solver = check_choice(self.solver, "solver", SOLVERS)
        if self.kernel_ is None and solver == "eigenpro":
            raise ValueError(
                "solver='eigenpro' needs kernel evaluations; with kernel='precomputed' use "
                "'cholesky' or 'cg'."
            )
        if solver == "auto":
            return "cholesky" if self._dense_fits(n) else "cg"
        return solver

    def _solve_dense(self, K: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """``(K + alpha I)^-1 Y`` by Cholesky, regularising ``K`` in place; keeps the factor."""
        K.diagonal().add_(self._alpha)
        self._cholesky, _ = jittered_cholesky(K)
        return torch.cholesky_solve(Y, self._cholesky)

    def _solve_iterative(self, Y: torch.Tensor) -> torch.Tensor:
        """``(K + alpha I)^-1 Y`` matrix-free (CG or EigenPro) on the training inputs."""
        if self.kernel_ is None:
            A = self.X_fit_ + self._alpha * torch.eye(self.X_fit_.shape[0], dtype=self.X_fit_.dtype)
            return conjugate_gradient(A, Y, tol=self.tol).x
        res = solve_kernel_system(
            self.kernel_,
            self.X_fit_,
            Y,
            shift=self._alpha,
            method=self.route_,
            tol=self.tol,
            memory_budget=self.memory_budget,
        )
        return res.x

    def _fit_targets(self, X: Any, Y: np.ndarray) -> None:
        """Common fit path on validated ``X`` and 2-D targets ``Y [n, k]``."""
        self._alpha = self._check_regularisation(self.alpha, "alpha")
        self.kernel_ = self._make_kernel()
        Xt = self._tensor(X)
        if self.kernel_ is None and Xt.shape[0] != Xt.shape[1]:
            raise ValueError(
                f"kernel='precomputed' needs a square training Gram, got shape {tuple(Xt.shape)}."
            )
        self.X_fit_ = Xt
        self.route_ = self._route(Xt.shape[0])
        self._cholesky = None
        if self.route_ == "cholesky":
            K = Xt.clone() if self.kernel_ is None else self._gram(Xt)
            self._coef2d = self._solve_dense(K, self._tensor(Y))
        else:
            self._coef2d = self._solve_iterative(self._tensor(Y))

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

    def _inverse_diagonal(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``idx`` and ``diag((K + alpha I)^-1)[idx]``: all rows from the Cholesky
        factor, or a seeded subsample of rows from one block solve with unit vectors."""
        n = self.X_fit_.shape[0]
        dtype = self._coef2d.dtype
        if self._cholesky is not None:
            Linv = torch.linalg.solve_triangular(
                self._cholesky, torch.eye(n, dtype=dtype), upper=False
            )
            return torch.arange(n), (Linv * Linv).sum(dim=0)
        m = min(n, LOO_CALIBRATION_POINTS)
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:m]
        E = torch.zeros(n, m, dtype=dtype)
        E[idx, torch.arange(m)] = 1.0
        Z = self._solve_iterative(E)
        return idx, Z[idx, torch.arange(m)]

    def _fit_temperature(self, codes: np.ndarray) -> float:
        """Temperature minimising the NLL of the (exact) leave-one-out scores."""
        n = self.X_fit_.shape[0]
        if n < 2 or len(self.classes_) < 2:
            return 1.0
        rows, inv_diag = self._inverse_diagonal()
        codes = codes[rows.numpy()]
        Y = torch.as_tensor(np.eye(len(self.classes_))[codes], dtype=self._coef2d.dtype)
        return fit_temperature((Y - self._coef2d[rows] / inv_diag[:, None]).numpy(), codes)

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
