"""Recursive Feature Machines with a scikit-learn API: :class:`RFMRegressor`, :class:`RFMClassifier`.

An RFM (Radhakrishnan et al., Science 2024) alternates two steps, starting from ``M = I``:

1. kernel ridge regression with ``k_M(x, z) = exp(-||x - z||_M / L)``:
   ``(K_M + alpha I) coef = y``, ``f(x) = k_M(x, X) coef``;
2. ``M <- AGOP(f, X) = (1/n) sum_i grad f(x_i) grad f(x_i)^T``, rescaled so that its largest
   eigenvalue is 1 (the kernel then keeps its bandwidth's scale along the most important
   direction; see :func:`kernelens.rfm._metric.metric_update`).

``iters`` counts the metric updates, so ``iters + 1`` kernel solves run; the model of the last
one is kept, or, only when ``early_stopping=True``, that of the iteration with the lowest
validation error. With ``standardize=True`` (default) the iterations run on ``x / s``, ``s``
the features' standard deviations, so the defaults do not depend on the units of the inputs;
the fitted metric is reported in the coordinates of the inputs as given.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._persist import PersistMixin
from .._progress import progress
from .._sklearn import (
    DTYPES,
    CalibratedClassifierMixin,
    Constraint,
    TorchEstimatorMixin,
    boolean,
    choice,
    integer,
    memory_budget,
    nonnegative,
    open_unit_interval,
    optional,
    positive,
    wrap_like,
)
from ..kernels.calibration import fit_temperature, loo_temperature
from ._gradients import GRADIENT_KERNELS, base_kernel
from ._metric import MetricFactor, metric_update
from ._solve import SOLVERS, Solution, resolve_solver, solve, solve_dense
from .agop import machine_agop
from .machine import KernelMachine

__all__ = [
    "AGOPVanishedWarning",
    "EarlyStoppingWarning",
    "RFMClassifier",
    "RFMRegressor",
    "fit_temperature",
]

M_MODES = ("full", "diagonal")
#: Default ridge; ``reg``, its deprecated alias, is compared with it.
_DEFAULT_ALPHA = 1e-3


class AGOPVanishedWarning(UserWarning):
    """The AGOP was zero (the fitted function is constant on the data); ``M`` was kept."""


class EarlyStoppingWarning(UserWarning):
    """Early stopping kept iteration 0: ``M = I``, no feature was learned."""


def _random_state(value: Any, name: str) -> None:
    check_random_state(value)


class _RFMBase(PersistMixin, TorchEstimatorMixin):
    """What the RFM regressor and classifier share: hyper-parameters and the RFM loop."""

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "kernel": choice(GRADIENT_KERNELS),
        "bandwidth": positive,
        "alpha": nonnegative,
        "iters": integer(minimum=0),
        "M": choice(M_MODES),
        "centering": boolean,
        "standardize": boolean,
        "solver": choice(SOLVERS),
        "early_stopping": boolean,
        "validation_fraction": open_unit_interval,
        "agop_power": positive,
        "agop_samples": integer(),
        "tol": optional(positive),
        "max_iter": optional(integer()),
        "random_state": Constraint("None, an int or a RandomState", _random_state),
        "dtype": choice(DTYPES),
        "memory_budget": memory_budget,
        "show_progress": optional(boolean),
        "reg": optional(nonnegative),
    }

    def __init__(
        self,
        kernel: str = "laplace",
        *,
        bandwidth: float = 10.0,
        alpha: float = _DEFAULT_ALPHA,
        iters: int = 5,
        M: str = "full",
        centering: bool = True,
        standardize: bool = True,
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
        reg: float | None = None,
    ) -> None:
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.alpha = alpha
        self.iters = iters
        self.M = M
        self.centering = centering
        self.standardize = standardize
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
        self.reg = reg

    # -- checks -------------------------------------------------------------------------------
    def _validate_params(self) -> None:
        """The parameter table, then the deprecated ``reg``: sets ``alpha_``, the ridge used."""
        super()._validate_params()
        self.alpha_ = float(self.alpha)
        if self.reg is not None:
            if self.alpha != _DEFAULT_ALPHA:
                raise ValueError(
                    f"reg={self.reg!r} and alpha={self.alpha!r} are the same ridge strength; pass "
                    "only alpha (reg is deprecated)."
                )
            warnings.warn(
                "RFM's reg is deprecated and will be removed in the next release; use alpha "
                "(the ridge strength's name across kernelens' estimators).",
                FutureWarning,
                stacklevel=3,
            )
            self.alpha_ = float(self.reg)

    # -- the RFM loop -------------------------------------------------------------------------
    def _split(self, n: int, stratify: np.ndarray | None) -> tuple[Any, Any]:
        """Indices of the training and validation parts for early stopping (validation None
        when the data are too small to split)."""
        n_val = math.ceil(self.validation_fraction * n)
        if n_val < 2 or n - n_val < 2:
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
    ) -> tuple[KernelMachine, Solution, list[dict[str, Any]]]:
        """The RFM iterations on ``X [n, d]``, ``Y [n, c]``; returns the kept machine, its
        solution and the per-iteration history. Without ``val`` the last iteration is kept
        (its Cholesky factor too, for calibration); with it, the best validation one."""
        n, d = X.shape
        kind = self.kernel
        diagonal = self.M == "diagonal"
        solver = resolve_solver(
            self.solver, n, X.dtype, self.memory_budget, refuse_over_budget=True
        )
        agop_rows = None
        if n > self.agop_samples:
            rng = np.random.default_rng(seed)
            agop_rows = torch.from_numpy(np.sort(rng.choice(n, self.agop_samples, replace=False)))
        intercept = Y.mean(dim=0) if self.centering else torch.zeros(Y.shape[1], dtype=Y.dtype)
        M = torch.eye(d, dtype=X.dtype)
        coef = None
        factor = MetricFactor.identity(d, dtype=X.dtype)
        history: list[dict[str, Any]] = []
        best: tuple[tuple[float, float], KernelMachine, Solution, int] | None = None
        steps = progress(range(self.iters + 1), desc="RFM", enable=self.show_progress)
        for t in steps:
            last = t == self.iters
            machine, sol, W = self._solve(
                M, factor, X, Y, intercept, solver, coef, seed, keep_factor=last and val is None
            )
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
                    best = (key, machine, sol, t)
            history.append(record)
            if last:
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
        self.solver_ = solver
        if best is not None:
            self.best_iter_ = best[3]
            if best[3] == 0 and len(history) > 1:
                warnings.warn(
                    "early stopping kept iteration 0 (M = I: no feature was learned) because "
                    "no metric update lowered the validation error; check bandwidth and alpha, "
                    "or pass early_stopping=False to keep the last iteration.",
                    EarlyStoppingWarning,
                    stacklevel=4,
                )
            return best[1], best[2], history
        self.best_iter_ = len(history) - 1
        return machine, sol, history

    def _solve(
        self,
        M: torch.Tensor,
        factor: MetricFactor,
        X: torch.Tensor,
        Y: torch.Tensor,
        intercept: torch.Tensor,
        solver: str,
        x0: torch.Tensor | None,
        seed: int,
        *,
        keep_factor: bool = False,
    ) -> tuple[KernelMachine, Solution, torch.Tensor | None]:
        """Kernel ridge regression of ``Y - intercept`` with metric ``M`` (warm-started at
        ``x0`` by the iterative solvers): the machine, the solver's solution (with its
        Cholesky factor when ``keep_factor``) and, from the dense route otherwise, the AGOP
        weights at the training points (see :func:`solve_dense`)."""
        U = factor.apply(X)
        kern = base_kernel(self.kernel, self.bandwidth)
        W = None
        if solver == "cholesky":
            sol, W = solve_dense(
                self.kernel, kern, U, Y - intercept, self.alpha_, keep_factor=keep_factor
            )
        else:
            sol = solve(
                kern,
                U,
                Y - intercept,
                self.alpha_,
                solver,
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

    def _feature_scale(self, X: torch.Tensor) -> torch.Tensor:
        """``s [d]``: the features' standard deviations (1 for constant features), or ones
        without ``standardize``. The kernels are translation invariant, so dividing by ``s``
        is the whole standardisation."""
        if not self.standardize:
            return torch.ones(X.shape[1], dtype=X.dtype)
        std = X.std(dim=0, unbiased=False)
        return torch.where(std > 0, std, torch.ones_like(std))

    def _fit_targets(
        self, X: np.ndarray, Y: np.ndarray, stratify: np.ndarray | None
    ) -> tuple[KernelMachine, Solution, int]:
        """Run RFM on ``X [n, d]``, ``Y [n, c]`` (numpy); set the fitted attributes. Returns
        the machine in the scaled coordinates, its solution and the solvers' seed."""
        Xt, Yt = self._tensor(X), self._tensor(Y)
        self.scale_ = self._feature_scale(Xt)
        Xs = Xt / self.scale_
        va = None
        if self.early_stopping:
            tr, va = self._split(len(X), stratify)
        # one seed for the solvers' random subsamples, drawn after the split's
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        if va is None:
            machine, sol, history = self._run(Xs, Yt, None, seed)
        else:
            machine, sol, history = self._run(Xs[tr], Yt[tr], (Xs[va], Yt[va]), seed)
            # refit the coefficients on all the data with the kept metric
            intercept = Yt.mean(dim=0) if self.centering else machine.intercept
            self.solver_ = resolve_solver(
                self.solver, len(Xs), Xs.dtype, self.memory_budget, refuse_over_budget=True
            )
            machine, sol, _ = self._solve(
                machine.M,
                machine.factor,
                Xs,
                Yt,
                intercept,
                self.solver_,
                None,
                seed,
                keep_factor=self.solver_ == "cholesky",
            )
        self.machine_ = machine.rescaled(self.scale_)
        self.history_ = history
        self.n_iter_ = len(history) - 1
        self.M_ = self.machine_.M
        self.X_fit_ = Xt
        self.intercept_ = machine.intercept
        return machine, sol, seed

    def _scores(self, X: Any) -> torch.Tensor:
        check_is_fitted(self, "machine_")
        Xv = self._validate_X(X, reset=False)
        return self.machine_.predict(
            self._tensor(Xv), memory_budget=self.memory_budget, show_progress=self.show_progress
        )


class RFMRegressor(RegressorMixin, _RFMBase):
    """Recursive Feature Machine regression (scikit-learn API).

    Args:
        kernel: ``"laplace"`` (``exp(-||x - z||_M / L)``, default), ``"gaussian"``
            (``exp(-||x - z||_M^2 / (2 L^2))``) or ``"product_laplace"``
            (``exp(-||M^(1/2) (x - z)||_1 / L)``).
        bandwidth: ``L > 0``, in units of the standardised features with ``standardize``.
        alpha: ridge ``>= 0`` added to the Gram's diagonal (kernel values are in ``[0, 1]``);
            the same name as in :class:`~kernelens.kernels.KernelRidge`.
        iters: metric updates ``>= 0`` (``0`` is plain kernel ridge regression).
        M: ``"full"`` (a ``d x d`` metric) or ``"diagonal"`` (per-feature weights).
        centering: subtract the mean of ``y`` before the kernel solve and add it back in
            predictions (far from the data predictions then decay to the mean, not to 0).
        standardize: run the iterations on ``x / s`` with ``s`` the training features'
            standard deviations (constant features: 1), so that the defaults (bandwidth 10)
            mean the same on inputs in any units; raw and standardised inputs then give the
            same model. ``M_`` and ``machine_`` are in the coordinates of the inputs as
            given (``M_ = diag(1/s) M diag(1/s)``). ``False``: the kernel sees the inputs
            as they are (a full metric is then exactly rotation-equivariant).
        solver: ``"cholesky"`` (dense Gram, exact), ``"cg"`` (conjugate gradients on the tiled
            kernel operator with an EigenPro preconditioner; never forms the Gram),
            ``"eigenpro"`` (the EigenPro iteration: a few cheap epochs for very large ``n``)
            or ``"auto"``: Cholesky while three ``n x n`` matrices fit ``memory_budget``,
            CG beyond (:func:`kernelens.linalg.kernel_solve.resolve_solver`: data size and
            declared budget only). Iterative solves start from the previous iteration's
            coefficients.
        early_stopping: hold out ``validation_fraction`` of the data, run the iterations on
            the rest, keep the metric of the iteration with the lowest validation error and
            refit the coefficients on all the data with it (an :class:`EarlyStoppingWarning`
            says so when that is iteration 0). ``False`` (default): the last iteration is
            kept, always.
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
        reg: deprecated alias of ``alpha`` (a ``FutureWarning``; removed in the next release).

    Attributes:
        M_: the learned metric ``[d, d]`` (diagonal for ``M="diagonal"``), on the inputs
            as given.
        scale_: ``[d]`` the feature scales ``s`` (ones without ``standardize``).
        alpha_: the ridge used (``alpha``, or the deprecated ``reg``).
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
        self._validate_params()
        X, y = self._validate_X(
            X, reset=True, y=y, y_numeric=True, multi_output=True, ensure_min_samples=2
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


class RFMClassifier(CalibratedClassifierMixin, ClassifierMixin, _RFMBase):
    """Recursive Feature Machine classification: RFM regression on one-hot targets.

    Same arguments as :class:`RFMRegressor`. ``predict`` takes the argmax of the regression
    scores; ``predict_proba`` is ``softmax(scores / temperature_)``, with the temperature
    fitted, as :class:`~kernelens.kernels.KernelClassifier` does (one shared code path,
    :mod:`kernelens.kernels.calibration`), on the exact leave-one-out scores of the final
    kernel solve: ``f_loo = Y - coef / diag((K_M + alpha I)^-1)`` with the learned metric
    ``M`` and the intercept held fixed. Exact for every training point on the Cholesky route;
    on the iterative routes, for a subsample of 256 training points drawn with
    ``random_state`` (one block solve against their unit vectors, exact up to the solver's
    tolerance). No data are held out for it.

    Attributes:
        classes_: the class labels (any hashable, e.g. strings).
        temperature_: the fitted softmax temperature.
        coef_: ``[n, C]`` dual coefficients; other attributes as :class:`RFMRegressor`
            (``train_error`` and ``val_error`` are misclassification rates).
    """

    def fit(self, X: Any, y: Any) -> RFMClassifier:
        """Fit on ``X [n, d]`` and labels ``y [n]`` (numbers or strings)."""
        self._validate_params()
        X, y = self._validate_X(X, reset=True, y=y, ensure_min_samples=2)
        codes, Y = self._encode_labels(y)
        machine, sol, seed = self._fit_targets(X, Y, codes)
        self.coef_ = self.machine_.coef
        self.temperature_ = self._loo_temperature(machine, sol, Y, codes, seed)
        return self

    def _loo_temperature(
        self, machine: KernelMachine, sol: Solution, Y: np.ndarray, codes: np.ndarray, seed: int
    ) -> float:
        """Temperature from the exact leave-one-out scores of the final solve."""
        kern = base_kernel(self.kernel, self.bandwidth)
        U = machine.centres
        targets = self._tensor(Y) - machine.intercept
        factor = sol.factor
        if self.solver_ == "cholesky" and factor is None:  # the AGOP stopped the loop early
            factor = solve_dense(self.kernel, kern, U, targets, self.alpha_, keep_factor=True)[
                0
            ].factor

        def solve_block(B: torch.Tensor) -> torch.Tensor:
            return solve(
                kern,
                U,
                B,
                self.alpha_,
                self.solver_,
                tol=self.tol,
                max_iter=self.max_iter,
                seed=seed,
                memory_budget=self.memory_budget,
                show_progress=self.show_progress,
            ).coef

        return loo_temperature(
            self._tensor(Y), machine.coef, codes, factor=factor, solve=solve_block, seed=seed
        )

    def _errors(self, pred: torch.Tensor, Y: torch.Tensor) -> tuple[float, float]:
        wrong = float((pred.argmax(dim=1) != Y.argmax(dim=1)).double().mean())
        return wrong, float(((pred - Y) ** 2).mean())
