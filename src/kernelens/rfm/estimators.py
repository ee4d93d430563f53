"""Recursive Feature Machines with a scikit-learn API: :class:`RFMRegressor`, :class:`RFMClassifier`.

An RFM (Radhakrishnan et al., Science 2024) alternates two steps, starting from ``M = I``:

1. kernel ridge regression with ``k_M(x, z) = exp(-||x - z||_M / L)``:
   ``(K_M + reg I) coef = y``, ``f(x) = k_M(x, X) coef``;
2. ``M <- AGOP(f, X) = (1/n) sum_i grad f(x_i) grad f(x_i)^T``, rescaled so that its largest
   eigenvalue is 1 (the kernel then keeps its bandwidth's scale along the most important
   direction; see :func:`kernelens.rfm._metric.metric_update`).

``iters`` counts the metric updates, so ``iters + 1`` kernel solves run; the model of the last
one (or, with ``early_stopping``, of the iteration with the lowest validation error) is kept.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .._persist import PersistMixin
from .._progress import progress
from .._validation import (
    check_choice,
    check_nonnegative,
    check_positive,
    check_positive_int,
)
from ..kernels.calibration import fit_temperature
from ..kernels.sklearn_base import DTYPES, to_numpy, wrap_like
from ._gradients import GRADIENT_KERNELS
from ._metric import MetricFactor, metric_update
from ._solve import SOLVERS, Solution, resolve_solver, solve, solve_dense
from .agop import machine_agop
from .machine import KernelMachine, base_kernel

__all__ = ["RFMClassifier", "RFMRegressor"]

M_MODES = ("full", "diagonal")


class AGOPVanishedWarning(UserWarning):
    """The AGOP was zero (the fitted function is constant on the data); ``M`` was kept."""


class _RFMBase(PersistMixin, BaseEstimator):
    """What the RFM regressor and classifier share: hyper-parameters and the RFM loop."""

    _multi_output = True
    #: Whether fit always holds out a validation split (the classifier calibrates on it).
    _always_split = False

    def __init__(
        self,
        kernel: str = "laplace",
        *,
        bandwidth: float = 10.0,
        reg: float = 1e-3,
        iters: int = 5,
        M: str = "full",
        centering: bool = True,
        solver: str = "auto",
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        agop_power: float = 1.0,
        agop_samples: int = 20_000,
        tol: float | None = None,
        max_iter: int | None = None,
        random_state: int | np.random.RandomState | None = None,
        dtype: str = "float64",
        memory_budget: int | None = None,
        show_progress: bool | None = None,
    ) -> None:
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.reg = reg
        self.iters = iters
        self.M = M
        self.centering = centering
        self.solver = solver
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.agop_power = agop_power
        self.agop_samples = agop_samples
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.dtype = dtype
        self.memory_budget = memory_budget
        self.show_progress = show_progress

    # -- checks -------------------------------------------------------------------------------
    def _check_params(self) -> None:
        check_choice(self.kernel, "kernel", GRADIENT_KERNELS)
        check_positive(self.bandwidth, "bandwidth")
        check_nonnegative(self.reg, "reg")
        check_positive_int(self.iters, "iters", minimum=0)
        check_choice(self.M, "M", M_MODES)
        if not isinstance(self.centering, bool | np.bool_):
            raise TypeError(f"centering must be True or False, got {self.centering!r}.")
        check_choice(self.solver, "solver", SOLVERS)
        frac = check_positive(self.validation_fraction, "validation_fraction")
        if frac >= 1:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}."
            )
        check_positive(self.agop_power, "agop_power")
        check_positive_int(self.agop_samples, "agop_samples")
        if self.tol is not None:
            check_positive(self.tol, "tol")
        if self.max_iter is not None:
            check_positive_int(self.max_iter, "max_iter")
        check_choice(self.dtype, "dtype", DTYPES)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=DTYPES[self.dtype])

    # -- the RFM loop -------------------------------------------------------------------------
    def _split(self, n: int, stratify: np.ndarray | None, needed: bool) -> tuple[Any, Any]:
        """Indices of the training and validation parts (validation None without a split)."""
        n_val = math.ceil(self.validation_fraction * n)
        if not needed or n_val < 2 or n - n_val < 2:
            return np.arange(n), None
        if stratify is not None and np.bincount(stratify).min() < 2:
            stratify = None
        if stratify is not None and n_val < len(np.unique(stratify)):
            stratify = None
        tr, va = train_test_split(
            np.arange(n), test_size=n_val, random_state=self.random_state, stratify=stratify
        )
        return np.sort(tr), np.sort(va)

    def _errors(self, pred: torch.Tensor, Y: torch.Tensor) -> tuple[float, float]:
        """``(error, mse)``: the selection key of an iteration (lower is better)."""
        mse = float(((pred - Y) ** 2).mean())
        return mse, mse

    def _run(
        self,
        X: torch.Tensor,
        Y: torch.Tensor,
        val: tuple[torch.Tensor, torch.Tensor] | None,
        seed: int,
    ) -> tuple[KernelMachine, list[dict[str, Any]]]:
        """The RFM iterations on ``X [n, d]``, ``Y [n, c]``; returns the kept machine and the
        per-iteration history."""
        n, d = X.shape
        kind = self.kernel
        diagonal = self.M == "diagonal"
        method = resolve_solver(self.solver, n, X.dtype, self.memory_budget)
        agop_rows = None
        if n > self.agop_samples:
            rng = np.random.default_rng(seed)
            agop_rows = torch.from_numpy(np.sort(rng.choice(n, self.agop_samples, replace=False)))
        intercept = Y.mean(dim=0) if self.centering else torch.zeros(Y.shape[1], dtype=Y.dtype)
        M = torch.eye(d, dtype=X.dtype)
        coef = None
        factor = MetricFactor.identity(d, dtype=X.dtype)
        history: list[dict[str, Any]] = []
        best: tuple[tuple[float, float], KernelMachine, int] | None = None
        steps = progress(range(self.iters + 1), desc="RFM", enable=self.show_progress)
        for t in steps:
            machine, sol, W = self._solve(M, factor, X, Y, intercept, method, coef, seed)
            coef = machine.coef
            record: dict[str, Any] = {
                "iteration": t,
                "train_error": self._errors(sol.fitted + intercept, Y)[0],
                "rank_M": factor.rank,
                "solver_iterations": sol.iterations,
                "converged": sol.converged,
            }
            if val is not None:
                key = self._errors(
                    machine.predict(val[0], memory_budget=self.memory_budget), val[1]
                )
                record["val_error"] = key[0]
                if best is None or key < best[0]:
                    best = (key, machine, t)
            history.append(record)
            if t == self.iters:
                break
            U = machine.centres if agop_rows is None else machine.centres[agop_rows]
            if W is not None and agop_rows is not None:
                W = W[agop_rows]
            G = machine_agop(
                machine, U, diagonal=diagonal, weights=W, memory_budget=self.memory_budget
            )
            del W
            update = metric_update(
                G, power=self.agop_power, symmetric_root=kind == "product_laplace"
            )
            if update is None:
                warnings.warn(
                    f"the AGOP vanished at iteration {t} (the fitted function is constant on "
                    "the training data); M is kept and the iterations stop.",
                    AGOPVanishedWarning,
                    stacklevel=4,
                )
                break
            M, factor = update
        self.solver_ = method
        if best is not None:
            self.best_iter_ = best[2]
            return best[1], history
        self.best_iter_ = len(history) - 1
        return machine, history

    def _solve(
        self,
        M: torch.Tensor,
        factor: MetricFactor,
        X: torch.Tensor,
        Y: torch.Tensor,
        intercept: torch.Tensor,
        method: str,
        x0: torch.Tensor | None,
        seed: int,
    ) -> tuple[KernelMachine, Solution, torch.Tensor | None]:
        """Kernel ridge regression of ``Y - intercept`` with metric ``M`` (warm-started at
        ``x0`` by the iterative solvers): the machine, the solver's solution and, from the
        dense route, the AGOP weights at the training points (see :func:`solve_dense`)."""
        U = factor.apply(X)
        kern = base_kernel(self.kernel, self.bandwidth)
        W = None
        if method == "cholesky":
            sol, W = solve_dense(self.kernel, kern, U, Y - intercept, self.reg)
        else:
            sol = solve(
                kern,
                U,
                Y - intercept,
                self.reg,
                method,
                x0=x0,
                tol=self.tol,
                max_iter=self.max_iter,
                seed=seed,
                memory_budget=self.memory_budget,
                show_progress=self.show_progress,
            )
        machine = KernelMachine(
            self.kernel, float(self.bandwidth), M, factor, U, sol.coef, intercept
        )
        return machine, sol, W

    def _fit_targets(self, X: np.ndarray, Y: np.ndarray, stratify: np.ndarray | None) -> None:
        """Run RFM on ``X [n, d]``, ``Y [n, c]`` (numpy); set the fitted attributes."""
        Xt, Yt = self._tensor(X), self._tensor(Y)
        needs_split = self.early_stopping or self._always_split
        tr, va = self._split(len(X), stratify, needs_split)
        # one seed for the solvers' random subsamples, drawn after the split's
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        if va is None:
            machine, history = self._run(Xt, Yt, None, seed)
        else:
            machine, history = self._run(Xt[tr], Yt[tr], (Xt[va], Yt[va]), seed)
            self._calibrate(machine, Xt[va], Yt[va])
            # refit the coefficients on all the data with the kept metric
            intercept = Yt.mean(dim=0) if self.centering else machine.intercept
            method = resolve_solver(self.solver, len(Xt), Xt.dtype, self.memory_budget)
            machine, _, _ = self._solve(
                machine.M, machine.factor, Xt, Yt, intercept, method, None, seed
            )
        self.machine_ = machine
        self.history_ = history
        self.n_iter_ = len(history) - 1
        self.M_ = machine.M
        self.X_fit_ = Xt
        self.intercept_ = machine.intercept

    def _calibrate(self, machine: KernelMachine, Xv: torch.Tensor, Yv: torch.Tensor) -> None:
        """Hook for the classifier (temperature on held-out scores)."""

    def _scores(self, X: Any) -> torch.Tensor:
        check_is_fitted(self, "machine_")
        Xv = validate_data(self, to_numpy(X), reset=False, dtype=np.float64)
        return self.machine_.predict(
            self._tensor(Xv), memory_budget=self.memory_budget, show_progress=self.show_progress
        )

    def __sklearn_tags__(self):  # type: ignore[override]
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = self._multi_output
        return tags


class RFMRegressor(RegressorMixin, _RFMBase):
    """Recursive Feature Machine regression (scikit-learn API).

    Args:
        kernel: ``"laplace"`` (``exp(-||x - z||_M / L)``, default), ``"gaussian"``
            (``exp(-||x - z||_M^2 / (2 L^2))``) or ``"product_laplace"``
            (``exp(-||M^(1/2) (x - z)||_1 / L)``).
        bandwidth: ``L > 0``.
        reg: ridge ``>= 0`` added to the Gram's diagonal (kernel values are in ``[0, 1]``).
        iters: metric updates ``>= 0`` (``0`` is plain kernel ridge regression).
        M: ``"full"`` (a ``d x d`` metric) or ``"diagonal"`` (per-feature weights).
        centering: subtract the mean of ``y`` before the kernel solve and add it back in
            predictions (far from the data predictions then decay to the mean, not to 0).
        solver: ``"cholesky"`` (dense Gram, exact), ``"cg"`` (conjugate gradients on the tiled
            kernel operator with an EigenPro preconditioner; never forms the Gram),
            ``"eigenpro"`` (the EigenPro iteration: a few cheap epochs for very large ``n``)
            or ``"auto"``: Cholesky while three ``n x n`` matrices fit ``memory_budget``,
            CG beyond. Iterative solves start from the previous iteration's coefficients.
        early_stopping: hold out ``validation_fraction`` of the data, run the iterations on
            the rest, keep the metric of the iteration with the lowest validation error and
            refit the coefficients on all the data with it.
        validation_fraction: share of the data held out for early stopping.
        agop_power: the metric is ``AGOP^agop_power`` (``1``: Radhakrishnan et al.; ``0.5``:
            the square root used in later AGOP work, a slower, more conservative update).
        agop_samples: the AGOP is averaged over at most this many training points (a random
            subset drawn with ``random_state`` when there are more).
        tol: relative residual target of the iterative solvers (their defaults if None).
        max_iter: CG iterations / EigenPro epochs per solve (their defaults if None).
        random_state: seed of the validation split, the AGOP subset and the solvers'
            subsamples.
        dtype: ``"float64"`` (default) or ``"float32"``.
        memory_budget: bytes for Grams and tiles (default: 2 GiB, or $KERNELENS_MEMORY_BUDGET).
        show_progress: progress bars (default: on a terminal).

    Attributes:
        M_: the learned metric ``[d, d]`` (diagonal for ``M="diagonal"``).
        coef_: dual coefficients ``[n]`` (``[n, k]`` for ``k`` targets).
        intercept_: ``[k]`` the mean of ``y`` (zeros without centering).
        history_: one dict per iteration: ``iteration``, ``train_error`` (MSE),
            ``val_error`` (with early stopping), ``rank_M`` (the rank of the metric used),
            ``solver_iterations`` and ``converged`` (the solver's).
        best_iter_: the iteration kept; ``n_iter_``: the iterations run.
        machine_: the fitted :class:`~kernelens.rfm.KernelMachine`.
        solver_: the solver that ran.
    """

    def fit(self, X: Any, y: Any) -> RFMRegressor:
        """Fit on ``X [n, d]`` and ``y [n]`` or ``[n, k]`` (numpy or torch)."""
        self._check_params()
        X, y = validate_data(
            self,
            to_numpy(X),
            to_numpy(y),
            dtype=np.float64,
            y_numeric=True,
            multi_output=True,
            ensure_min_samples=2,
        )
        Y = y[:, None] if y.ndim == 1 else y
        self._fit_targets(X, Y, None)
        coef = self.machine_.coef
        self.coef_ = coef[:, 0] if y.ndim == 1 else coef
        self._single_target = y.ndim == 1
        self.intercept_ = self.intercept_[0] if y.ndim == 1 else self.intercept_
        return self

    def predict(self, X: Any) -> Any:
        """Predictions ``[m]`` (or ``[m, k]``); numpy for numpy input, torch for torch input."""
        s = self._scores(X)
        return wrap_like(s[:, 0] if self._single_target else s, X)


class RFMClassifier(ClassifierMixin, _RFMBase):
    """Recursive Feature Machine classification: RFM regression on one-hot targets.

    Same arguments as :class:`RFMRegressor`. ``predict`` takes the argmax of the regression
    scores; ``predict_proba`` is ``softmax(scores / temperature_)`` with the temperature
    fitted by minimising the negative log-likelihood of held-out scores, so that
    probabilities (and perplexities computed from them) are calibrated. The held-out part is
    the ``validation_fraction`` split (stratified), which the classifier always makes when
    the data allow (at least two samples on each side); it is also used for early stopping
    when enabled. The coefficients are refitted on all the data afterwards.
    Without a split (tiny data) ``temperature_`` is 1.

    Attributes:
        classes_: the class labels (any hashable, e.g. strings).
        temperature_: the fitted softmax temperature.
        coef_: ``[n, C]`` dual coefficients; other attributes as :class:`RFMRegressor`
            (``train_error`` and ``val_error`` are misclassification rates).
    """

    _multi_output = False
    _always_split = True

    def fit(self, X: Any, y: Any) -> RFMClassifier:
        """Fit on ``X [n, d]`` and labels ``y [n]`` (numbers or strings)."""
        self._check_params()
        X, y = validate_data(self, to_numpy(X), to_numpy(y), dtype=np.float64, ensure_min_samples=2)
        check_classification_targets(y)
        enc = LabelEncoder().fit(y)
        self.classes_ = enc.classes_
        codes = enc.transform(y)
        self.temperature_ = 1.0
        self._fit_targets(X, np.eye(len(self.classes_))[codes], codes)
        self.coef_ = self.machine_.coef
        return self

    def _errors(self, pred: torch.Tensor, Y: torch.Tensor) -> tuple[float, float]:
        wrong = float((pred.argmax(dim=1) != Y.argmax(dim=1)).double().mean())
        return wrong, float(((pred - Y) ** 2).mean())

    def _calibrate(self, machine: KernelMachine, Xv: torch.Tensor, Yv: torch.Tensor) -> None:
        if len(self.classes_) < 2:
            return
        scores = machine.predict(Xv, memory_budget=self.memory_budget).double().numpy()
        self.temperature_ = fit_temperature(scores, Yv.argmax(dim=1).numpy())

    def decision_function(self, X: Any) -> Any:
        """Regression scores ``[m, C]`` (``[m]`` for two classes: class 1 minus class 0)."""
        s = self._scores(X)
        if len(self.classes_) == 2:
            s = s[:, 1] - s[:, 0]
        return wrap_like(s, X)

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities ``[m, C]``: ``softmax(scores / temperature_)``."""
        p = torch.softmax(self._scores(X) / self.temperature_, dim=1)
        return wrap_like(p, X)

    def predict_log_proba(self, X: Any) -> Any:
        """``log predict_proba`` computed stably ``[m, C]``."""
        p = torch.log_softmax(self._scores(X) / self.temperature_, dim=1)
        return wrap_like(p, X)

    def predict(self, X: Any) -> Any:
        """The most likely class of each row."""
        best = self._scores(X).argmax(dim=1).cpu().numpy()
        return self.classes_[best]
