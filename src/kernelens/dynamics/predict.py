"""Closed-form predictions of gradient descent on the squared loss with a fixed kernel.

The conventions are neural-tangents 0.6.5's ``predict.gradient_descent_mse``: the loss is
``0.5 ||f - y||^2 / y.size``; ``t`` is continuous time in units of the learning rate (absolute
time ``learning_rate * t``); ``diag_reg`` is scaled by the mean diagonal of the kernel unless
``diag_reg_absolute_scale``; ``diag_reg`` enters the training dynamics as ``K + r I`` (so train
predictions still tend to ``y_train``); ``t=None`` means ``t = infinity``.
"""

from __future__ import annotations

from typing import Any

import torch

from .._validation import check_nonnegative, check_positive
from ._checks import as_2d_kernel, check_fx, check_kernel, check_targets, check_times
from ._spectral import KernelEigh, flow_factors, gd_factors, momentum_factors, stable_step

__all__ = ["MSEPredictor", "gradient_descent_mse"]


class MSEPredictor:
    """The function returned by :func:`gradient_descent_mse`.

    Call it as ``predict(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)``. The
    eigendecomposition of the (regularised) train kernel is computed on the first call and
    reused.

    Attributes:
        n_outputs: ``y_train.size``, the loss normaliser.
        reg: the absolute diagonal regulariser added to the kernel.
    """

    def __init__(
        self,
        k_train_train: Any,
        y_train: Any,
        learning_rate: float,
        diag_reg: float,
        diag_reg_absolute_scale: bool,
        discrete: bool,
        momentum: float | None,
    ) -> None:
        self._k = check_kernel(k_train_train, "k_train_train", square=True)
        self.dtype = self._k.dtype
        n = self._k.shape[0]
        self._y = check_targets(y_train, n, self.dtype)
        self._vector_y = self._y.ndim == 1
        y2 = self._y[:, None] if self._vector_y else self._y
        if self._k.ndim == 4 and self._k.shape[2] != y2.shape[1]:
            raise ValueError(
                f"k_train_train is [N, N, O, O] with O = {self._k.shape[2]} but y_train has "
                f"{y2.shape[1]} outputs; they must agree (or pass an [N, N] kernel shared across "
                "outputs)."
            )
        self._y2 = y2
        self.n_outputs = int(y2.numel())
        self.learning_rate = check_positive(learning_rate, "learning_rate")
        diag_reg = check_nonnegative(diag_reg, "diag_reg")
        if not isinstance(discrete, bool):
            raise TypeError(f"discrete must be True or False, got {discrete!r}.")
        self.discrete = discrete
        if momentum is not None:
            if not discrete:
                raise ValueError(
                    "momentum= describes heavy-ball gradient steps, so it needs discrete=True "
                    "(t then counts steps); neural-tangents' continuous-time momentum ODE is not "
                    "implemented here."
                )
            momentum = float(momentum)
            if not 0.0 <= momentum < 1.0:
                raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        self.momentum = momentum
        k2 = as_2d_kernel(self._k)
        self._k2 = k2
        self.reg = diag_reg if diag_reg_absolute_scale else diag_reg * float(k2.diagonal().mean())
        self._eigh: KernelEigh | None = None

    # -- shapes ---------------------------------------------------------------------------
    @property
    def eigh(self) -> KernelEigh:
        """The eigendecomposition of ``K + reg I`` (``[P, P]``, ``P = N`` or ``N O``)."""
        if self._eigh is None:
            self._eigh = KernelEigh.of(self._k2, self.reg, "k_train_train")
        return self._eigh

    def _to_modes(self, r: torch.Tensor) -> torch.Tensor:
        """Outputs ``[N, O]`` as the ``[P, C]`` matrix the 2-D kernel acts on."""
        return r if self._k.ndim == 2 else r.reshape(-1, 1)

    def _from_modes(self, m: torch.Tensor, rows: int) -> torch.Tensor:
        """``[..., P, C]`` back to ``[..., rows, O]`` (``[..., rows]`` for vector targets)."""
        out = m.reshape(*m.shape[:-2], rows, self._y2.shape[1])
        return out[..., 0] if self._vector_y else out

    def _check_test_kernel(self, k_test_train: Any) -> torch.Tensor:
        k = check_kernel(k_test_train, "k_test_train", square=False).to(self.dtype)
        n, o = self._y2.shape
        if k.ndim != self._k.ndim:
            raise ValueError(
                f"k_test_train has {k.ndim} axes but k_train_train has {self._k.ndim}; both "
                "must be [M, N] / [N, N] or both [M, N, O, O] / [N, N, O, O]."
            )
        if k.shape[1] != n or (k.ndim == 4 and k.shape[2] != o):
            want = f"[M, {n}]" if k.ndim == 2 else f"[M, {n}, {o}, {o}]"
            raise ValueError(f"k_test_train must be {want}, got shape {tuple(k.shape)}.")
        return k

    def factors(self, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Per eigenmode of ``K + reg I``: ``(rho(t) - 1, (rho(t) - 1) / lambda)``, each
        ``[T, P]`` for ``T = t.numel()``, where ``rho`` is the factor by which the residual's
        component along that eigenvector has shrunk at time (or step) ``t``."""
        tt = check_times(t, self.dtype, discrete=self.discrete).reshape(-1)
        e = self.eigh.evals
        lr, n = self.learning_rate, self.n_outputs
        if not self.discrete:
            return flow_factors(e, tt, lr, n)
        if self.momentum is None:
            return gd_factors(e, tt, lr, n)
        return momentum_factors(e, tt, lr, n, self.momentum)

    def residual_factors(self, t: Any) -> torch.Tensor:
        """``rho(t) [*t.shape, P]``: the fraction of the initial residual left along each
        eigenvector of ``K + reg I`` (ascending eigenvalues, as in :attr:`eigh`)."""
        shape = torch.as_tensor(t).shape
        return (self.factors(t)[0] + 1).reshape(*shape, -1)

    # -- prediction -------------------------------------------------------------------------
    def __call__(
        self,
        t: Any = None,
        fx_train_0: Any = 0.0,
        fx_test_0: Any = None,
        k_test_train: Any = None,
    ):
        """Outputs after training for time (steps) ``t``.

        Args:
            t: None (infinity), a scalar or a tensor of any shape (adds leading axes).
            fx_train_0: network outputs on the training set at ``t = 0``, ``[N, O]`` or a
                scalar; None means do not return train predictions.
            fx_test_0: outputs on the test set at ``t = 0``, ``[M, O]`` or a scalar; None
                means do not return test predictions.
            k_test_train: ``[M, N]`` (or ``[M, N, O, O]``), needed with ``fx_test_0``.

        Returns:
            ``(fx_train_t, fx_test_t)``, or only one of them when the other initial output is
            None; shapes ``[*t.shape, N, O]`` and ``[*t.shape, M, O]``.
        """
        shape = tuple(self._y.shape)
        f0 = check_fx(fx_train_0, shape, self.dtype, "fx_train_0")
        if f0 is None and fx_test_0 is None:
            raise ValueError(
                "fx_train_0 and fx_test_0 are both None, so there is nothing to predict; pass "
                "at least one of them."
            )
        kt = None
        g0 = None
        if fx_test_0 is not None:
            if k_test_train is None:
                raise ValueError(
                    "fx_test_0 is given but k_test_train is None; test predictions need the "
                    "test-train kernel [M, N] (or [M, N, O, O])."
                )
            kt = self._check_test_kernel(k_test_train)
            g0 = check_fx(fx_test_0, (kt.shape[0], *shape[1:]), self.dtype, "fx_test_0")
        if t is None:
            return self._infinite(f0, g0, kt)
        return self._finite(t, f0, g0, kt)

    def _pack(self, train, test, f0, g0):
        if f0 is not None and g0 is not None:
            return train, test
        return train if g0 is None else test

    def _infinite(self, f0, g0, kt):
        if self.discrete and not stable_step(
            self.eigh.lambda_max, self.learning_rate, self.n_outputs, self.momentum or 0.0
        ):
            limit = 2 * (1 + (self.momentum or 0.0)) * self.n_outputs / self.eigh.lambda_max
            raise ValueError(
                f"discrete gradient descent with learning_rate={self.learning_rate:.4g} diverges "
                f"on this kernel (stable below {limit:.4g} = 2 (1 + momentum) y.size / "
                "lambda_max), so t=None has no limit; lower the learning rate."
            )
        train = self._y.clone() if f0 is not None else None
        test = None
        if g0 is not None:
            eig = self.eigh
            eig.check_invertible("k_train_train")
            rhs = self._y2 if f0 is None else self._y2 - self._as2(f0)
            coef = (eig.evecs.T @ self._to_modes(rhs)) / eig.evals[:, None]
            delta = as_2d_kernel(kt) @ (eig.evecs @ coef)
            test = g0 + self._from_modes(delta, kt.shape[0])
        return self._pack(train, test, f0, g0)

    def _as2(self, f: torch.Tensor) -> torch.Tensor:
        return f[:, None] if self._vector_y else f

    def _finite(self, t, f0, g0, kt):
        t_shape = torch.as_tensor(t).shape
        rm1, inv = self.factors(t)  # [T, P]
        eig = self.eigh
        rhs = -self._y2 if f0 is None else self._as2(f0) - self._y2
        coef = eig.evecs.T @ self._to_modes(rhs)  # [P, C]
        train = test = None
        if f0 is not None:
            d = _apply([eig.evecs], rm1, coef)  # [T, P, C]
            train = f0 + self._from_modes(d, self._y2.shape[0])
            train = train.reshape(*t_shape, *train.shape[1:])
        if g0 is not None:
            d = _apply([as_2d_kernel(kt), eig.evecs], inv, coef)  # [T, M, C]
            test = g0 + self._from_modes(d, kt.shape[0])
            test = test.reshape(*t_shape, *test.shape[1:])
        return self._pack(train, test, f0, g0)


def _apply(lefts: list[torch.Tensor], factors: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """``A_1 ... A_k diag(factors[t]) coef [P, C]`` for every t, multiplied right to left on
    one ``[P, T C]`` block (the cheap order: no ``[R, P]`` product of two kernels is formed):
    ``[T, R, C]``."""
    t, c = factors.shape[0], coef.shape[1]
    block = (factors.T[:, :, None] * coef[:, None, :]).reshape(coef.shape[0], t * c)
    for a in reversed(lefts):
        block = a @ block
    return block.reshape(block.shape[0], t, c).transpose(0, 1)


def gradient_descent_mse(
    k_train_train: Any,
    y_train: Any,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    discrete: bool = False,
    momentum: float | None = None,
) -> MSEPredictor:
    """Predict the outputs of gradient descent on ``0.5 ||f - y||^2 / y.size`` with the fixed
    kernel ``k_train_train`` (neural-tangents 0.6.5 ``predict.gradient_descent_mse``).

    Args:
        k_train_train: ``[N, N]`` (the same kernel for every output, ``K (x) I``) or
            ``[N, N, O, O]`` (a full kernel between outputs, e.g.
            ``empirical_ntk(model, x, output="full")``). Must be symmetric PSD.
        y_train: targets ``[N, O]`` (``[N]`` is read as one output, and outputs keep that shape).
        learning_rate: step size ``lr``.
        diag_reg: ``r`` in ``K + r I``, relative to the mean diagonal of the kernel unless
            ``diag_reg_absolute_scale``.
        diag_reg_absolute_scale: read ``diag_reg`` in absolute units.
        discrete: ``t`` counts gradient steps and the residual moves by
            ``(I - lr K / y.size)^t`` exactly, instead of ``exp(-lr t K / y.size)``.
        momentum: heavy-ball coefficient (torch.optim.SGD ``momentum``); needs ``discrete``.

    Returns:
        :class:`MSEPredictor`, called as ``predict(t, fx_train_0, fx_test_0, k_test_train)``.
    """
    return MSEPredictor(
        k_train_train,
        y_train,
        learning_rate,
        diag_reg,
        diag_reg_absolute_scale,
        discrete,
        momentum,
    )
