"""What kernelens' scikit-learn estimators share: input handling, parameter tables, classifiers.

- :func:`to_numpy` / :func:`wrap_like`: inputs may be numpy arrays or torch tensors; they are
  validated with scikit-learn's own ``validate_data`` (familiar error messages) and results
  come back as numpy for numpy input and as tensors for tensor input.
- Parameter tables: each estimator declares ``_parameter_constraints`` (name -> constraint),
  checked once at the start of ``fit`` by :meth:`TorchEstimatorMixin._validate_params`
  (scikit-learn's pattern); ``__init__`` only stores.
- :class:`CalibratedClassifierMixin`: one ``predict`` / ``predict_proba`` /
  ``predict_log_proba`` / ``decision_function`` / ``temperature_`` for every kernel
  classifier, calibrated on exact leave-one-out scores (:mod:`kernelens.kernels.calibration`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ._memory import resolve_memory_budget
from ._validation import check_choice, check_nonnegative, check_positive, check_positive_int

__all__ = [
    "DTYPES",
    "CalibratedClassifierMixin",
    "Constraint",
    "TorchEstimatorMixin",
    "boolean",
    "choice",
    "integer",
    "memory_budget",
    "nonnegative",
    "open_unit_interval",
    "optional",
    "positive",
    "to_numpy",
    "wrap_like",
]

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


# -- declarative parameter checks -------------------------------------------------------------
@dataclass(frozen=True)
class Constraint:
    """What one hyper-parameter may be: ``check(value, name)`` raises a named error if not."""

    describe: str
    check: Callable[[Any, str], Any]

    def __call__(self, value: Any, name: str) -> None:
        self.check(value, name)


def choice(options: Iterable[str]) -> Constraint:
    """One of ``options`` (strings)."""
    opts = tuple(options)
    return Constraint(f"one of {opts}", lambda v, n: check_choice(v, n, opts))


def _check_bool(value: Any, name: str) -> None:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}.")


def _check_unit(value: Any, name: str) -> None:
    if check_positive(value, name) >= 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}.")


positive = Constraint("a finite number > 0", check_positive)
nonnegative = Constraint("a finite number >= 0", check_nonnegative)
boolean = Constraint("True or False", _check_bool)
open_unit_interval = Constraint("a number in (0, 1)", _check_unit)
memory_budget = Constraint(
    "None or a positive number of bytes", lambda v, n: v is None or resolve_memory_budget(v)
)


def integer(minimum: int = 1) -> Constraint:
    """An integer ``>= minimum``."""
    return Constraint(
        f"an integer >= {minimum}", lambda v, n: check_positive_int(v, n, minimum=minimum)
    )


def optional(inner: Constraint) -> Constraint:
    """None or what ``inner`` allows."""
    return Constraint(f"None or {inner.describe}", lambda v, n: v is None or inner(v, n))


class TorchEstimatorMixin(BaseEstimator):
    """Input conversion, dtype and parameter validation for estimators computing in torch.

    Subclasses declare ``_parameter_constraints`` (every ``__init__`` argument) and a
    ``dtype`` hyper-parameter (``"float64"`` or ``"float32"``).
    """

    #: name -> :class:`Constraint`; checked at the start of ``fit``.
    _parameter_constraints: ClassVar[dict[str, Constraint]] = {}
    #: Whether ``y`` may be ``[n, k]`` (regressors) rather than only ``[n]``.
    _multi_output: bool = True
    dtype: str

    def _validate_params(self) -> None:
        """Check every hyper-parameter against the table (named errors)."""
        for name, value in self.get_params(deep=False).items():
            self._parameter_constraints[name](value, name)

    def _torch_dtype(self) -> torch.dtype:
        return DTYPES[check_choice(self.dtype, "dtype", DTYPES)]

    def _validate_X(self, X: Any, *, reset: bool, y: Any = "no_validation", **kw: Any) -> Any:
        """scikit-learn validation of numpy or torch input (returns numpy; ``(X, y)`` when
        ``y`` is given, as ``validate_data`` does)."""
        return validate_data(self, to_numpy(X), to_numpy(y), reset=reset, dtype=np.float64, **kw)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=self._torch_dtype())

    def __sklearn_tags__(self):  # type: ignore[override]
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = self._multi_output
        return tags


class CalibratedClassifierMixin:
    """Classification by regression on one-hot targets, with one calibration for all.

    The estimator provides ``_scores(X) -> [m, C]`` (regression scores, a tensor) and, in
    ``fit``, calls :meth:`_encode_labels` first and sets ``temperature_`` from
    :func:`kernelens.kernels.calibration.loo_temperature` on its final model. Then
    ``decision_function`` gives the scores (``[m]`` for two classes: class 1 minus class 0),
    ``predict`` their argmax, ``predict_proba`` ``softmax(scores / temperature_)`` and
    ``predict_log_proba`` its stable logarithm.
    """

    _multi_output = False
    classes_: np.ndarray
    temperature_: float
    _scores: Callable[[Any], torch.Tensor]

    def _encode_labels(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Set ``classes_``; return the codes ``[n]`` and the one-hot targets ``[n, C]``."""
        check_classification_targets(y)
        enc = LabelEncoder().fit(y)
        self.classes_ = enc.classes_
        codes = enc.transform(y)
        return codes, np.eye(len(self.classes_))[codes]

    def decision_function(self, X: Any) -> Any:
        """Regression scores ``[m, C]`` (``[m]`` for two classes: class 1 minus class 0)."""
        check_is_fitted(self, "classes_")
        s = self._scores(X)
        if len(self.classes_) == 2:
            s = s[:, 1] - s[:, 0]
        return wrap_like(s, X)

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities ``[m, C]``: ``softmax(scores / temperature_)``."""
        check_is_fitted(self, "classes_")
        return wrap_like(torch.softmax(self._scores(X) / self.temperature_, dim=1), X)

    def predict_log_proba(self, X: Any) -> Any:
        """``log predict_proba`` computed stably ``[m, C]``."""
        check_is_fitted(self, "classes_")
        return wrap_like(torch.log_softmax(self._scores(X) / self.temperature_, dim=1), X)

    def predict(self, X: Any) -> Any:
        """The most likely class for each row of ``X``."""
        check_is_fitted(self, "classes_")
        return self.classes_[self._scores(X).argmax(dim=1).cpu().numpy()]
