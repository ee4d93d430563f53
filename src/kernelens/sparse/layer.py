"""The Sparse Kernel layer: differentiable local kernel ridge regression as a torch module."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .._memory import element_size, tile_size
from .._validation import (
    as_tensor,
    check_consistent_length,
    check_finite,
    check_nonnegative,
    check_positive_int,
    check_same_device_dtype,
)
from ..kernels import Kernel, resolve_kernel
from .local import local_kernel_regression
from .metric import SearchMetric, search_metric
from .neighbors import NeighborIndex, make_index

__all__ = ["SparseKernelLayer"]

#: Entries of temporaries per local Gram entry (distances, kernel, shifted, factor, autograd).
_GRAM_TEMPORARIES = 8


class SparseKernelLayer(nn.Module):
    """Sparse Kernel (SK) layer: kernel ridge regression on each query's k nearest centers.

    For a query ``x`` the layer finds the ``k`` centers nearest to ``S(x)`` (``S`` the
    ``features`` module, the identity by default) in the kernel's own metric (the M metric
    for Mahalanobis kernels, L1 for product-Laplace; see :mod:`kernelens.sparse.metric`),
    ties broken by the lowest center index, solves the small ridge system
    ``(K(Z_k, Z_k) + reg I) alpha = Y_k`` with a batched Cholesky factorisation and returns
    ``K(S(x), Z_k) alpha``, where ``Z_k`` are the neighbours' features ``S(z_i)`` and ``Y_k``
    their targets. With ``k = n`` this is exactly dense kernel ridge regression on all centers;
    with ``k << n`` it is a local (lazy) approximation whose cost per query is ``O(k^3)`` plus
    the neighbour search. The same Cholesky factor gives the local GP posterior variance
    (:meth:`predict_variance`, or ``forward(x, return_variance=True)``).

    The three parameter sets of the Sparse Kernel construction, each fixed or learned:

    * **feature representations** ``S`` (``features``): a module applied to queries and
      centers; the kernel compares ``S(x)`` with ``S(z_i)``. Frozen (``requires_grad_(False)``,
      ``eval()``) it makes the layer a training-free readout of a pretrained network; trainable,
      gradients flow through both the query and the neighbours' features (deep kernel
      learning).
    * **target values** ``Y`` (``targets [n, c]``, ``learn_targets``): the values the local
      regressions interpolate. Fixed labels give a training-free predictor; learned, they are
      free outputs attached to the centers (like the output weights of an RBF network).
    * **evaluation points** ``Z`` (``centers [n, ...]``, ``learn_centers``): where the local
      systems are anchored. Fixed, they are the (labelled) training inputs; learned, they move
      like inducing points, and there can be far fewer of them than training examples.

    Neighbour selection is piecewise constant in its inputs: gradients flow through the kernel
    values, the local solves, the selected centers and targets, the bandwidth and the features,
    but not through *which* centers are selected (the output is continuous only where the
    neighbour set does not change; with ``k = n`` it is smooth).

    Index policy: the neighbour index (and the cached features of all centers) is rebuilt lazily
    on the first forward after the centers, the ``features`` module's parameters or buffers, or
    a Mahalanobis kernel's ``M`` change. Changes are detected by tensor version counters, which
    every in-place update bumps (optimizer steps, ``load_state_dict``, ``with torch.no_grad():
    p.copy_(...)``) and by storage changes (``.to()``, replacing a tensor). Edits through
    ``.data`` are invisible to version counters: call :meth:`invalidate_index` after them.

    Args:
        centers: ``[n, d]`` evaluation points (``[n, *input_shape]`` when ``features`` maps
            inputs of that shape to vectors).
        targets: ``[n, c]`` (or ``[n]``, then the output is ``[B]``) float target values; for
            classification pass one-hot rows.
        k: neighbours per query, ``1 <= k <= n``.
        kernel: a kernel name from :data:`kernelens.kernels.KERNELS` or a
            :class:`~kernelens.kernels.Kernel` instance.
        bandwidth: kernel bandwidth ``L > 0`` (default 1.0, or the instance's); stored as
            ``log_bandwidth`` so a learned bandwidth stays positive.
        reg: ridge ``>= 0`` added to the diagonal of every local Gram (``KernelRidge``'s
            ``alpha``; ``GaussianProcessRegressor``'s noise variance ``alpha``). Kernel values
            of the stationary kernels lie in ``[0, 1]``; float32 needs roughly
            ``reg >= 1e-5 k``.
        features: optional ``torch.nn.Module`` mapping ``[B, *input_shape]`` to ``[B, p]``;
            it must act on each sample independently (BatchNorm in eval mode, no dropout).
        learn_centers: make ``centers`` a Parameter.
        learn_targets: make ``targets`` a Parameter.
        learn_bandwidth: make ``log_bandwidth`` a Parameter (kernels with a bandwidth only).
        index: neighbour search backend: ``"auto"``/``"torch"`` (exact, tiled), ``"faiss"``
            (exact, faiss IndexFlat: the same neighbours as torch, to the bit), ``"hnsw"``
            (approximate), or a :class:`~kernelens.sparse.NeighborIndex` owned by this layer.
        kernel_params: extra constructor arguments of a named kernel (e.g. ``{"M": M}``).
        memory_budget: bytes for a tile of queries (local Grams and temporaries) and for the
            torch search (default: 2 GiB, or $KERNELENS_MEMORY_BUDGET).
        feature_batch: centers passed through ``features`` at once when caching their features.
    """

    def __init__(
        self,
        centers: torch.Tensor,
        targets: torch.Tensor,
        *,
        k: int,
        kernel: str | Kernel = "gaussian",
        bandwidth: float | None = None,
        reg: float = 1e-3,
        features: nn.Module | None = None,
        learn_centers: bool = False,
        learn_targets: bool = False,
        learn_bandwidth: bool = False,
        index: str | NeighborIndex = "auto",
        kernel_params: dict[str, Any] | None = None,
        memory_budget: int | None = None,
        feature_batch: int = 1024,
    ) -> None:
        super().__init__()
        if features is not None and not isinstance(features, nn.Module):
            raise TypeError(
                f"features must be a torch.nn.Module or None, got {type(features).__name__}."
            )
        centers = as_tensor(centers, "centers", ndim=2 if features is None else None)
        if centers.ndim < 2:
            raise ValueError(
                f"centers must be [n, ...] with at least 2 dimensions, got shape "
                f"{tuple(centers.shape)}."
            )
        if not isinstance(targets, torch.Tensor):
            targets = as_tensor(targets, "targets", ndim=(1, 2), dtype=centers.dtype)
        if not targets.is_floating_point():
            raise TypeError(
                f"targets must be floating point, got {targets.dtype}; for class labels pass "
                "one-hot rows, e.g. torch.nn.functional.one_hot(y, n_classes).to(centers.dtype)."
            )
        targets = as_tensor(targets, "targets", ndim=(1, 2))
        check_same_device_dtype({"centers": centers, "targets": targets})
        n = check_consistent_length(centers=centers, targets=targets)
        self.k = check_positive_int(k, "k")
        if self.k > n:
            raise ValueError(
                f"k={self.k} exceeds the number of centers n={n}; use k <= {n} (k = n is "
                "dense kernel ridge regression)."
            )
        self.reg = check_nonnegative(reg, "reg")
        self.feature_batch = check_positive_int(feature_batch, "feature_batch")
        self.memory_budget = memory_budget
        self._vector_targets = targets.ndim == 1
        targets = targets[:, None] if self._vector_targets else targets

        self._kernel_template = resolve_kernel(kernel, bandwidth, kernel_params)
        bw = self._initial_bandwidth(self._kernel_template)
        if learn_bandwidth and bw is None:
            raise ValueError(
                f"learn_bandwidth=True but kernel {self._kernel_template.name!r} has no "
                "bandwidth; use a kernel such as 'gaussian' or 'laplace'."
            )
        self.features = features
        self.index = make_index(index)
        self.learn_centers = bool(learn_centers)
        self.learn_targets = bool(learn_targets)
        self.learn_bandwidth = bool(learn_bandwidth)
        self._register("centers", centers.detach().clone(), self.learn_centers)
        self._register("targets", targets.detach().clone(), self.learn_targets)
        if bw is not None:
            log_bw = torch.tensor(math.log(bw), dtype=centers.dtype, device=centers.device)
            self._register("log_bandwidth", log_bw, self.learn_bandwidth)
        else:
            self.log_bandwidth = None
        self._cache_key: tuple[Any, ...] | None = None
        self._center_features: torch.Tensor | None = None
        self._search_space: SearchMetric | None = None
        self.register_load_state_dict_post_hook(_invalidate_after_load)

    # -- construction helpers -----------------------------------------------------------------
    @staticmethod
    def _initial_bandwidth(kernel: Kernel) -> float | None:
        """The resolved kernel's bandwidth as a float (None for kernels without one)."""
        if not kernel.has_bandwidth:
            return None
        bw = kernel.bandwidth  # type: ignore[attr-defined]
        return float(bw.detach()) if isinstance(bw, torch.Tensor) else float(bw)

    def _register(self, name: str, value: torch.Tensor, learn: bool) -> None:
        if learn:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    # -- public API -----------------------------------------------------------------------------
    @property
    def n_centers(self) -> int:
        """Number of centers ``n``."""
        return int(self.centers.shape[0])

    @property
    def bandwidth(self) -> torch.Tensor | None:
        """The kernel bandwidth as a 0-d tensor (differentiable when learned), or None."""
        return None if self.log_bandwidth is None else self.log_bandwidth.exp()

    @property
    def kernel(self) -> Kernel:
        """The kernel the layer uses, with its current bandwidth: ``layer.kernel(A, B)`` is
        the Gram ``[len(A), len(B)]`` of feature vectors (differentiable in the bandwidth)."""
        if self.log_bandwidth is None:
            return self._kernel_template
        return resolve_kernel(self._kernel_template, self.bandwidth)

    def __getstate__(self) -> dict[str, Any]:
        # copies and pickles drop the derived data; it is rebuilt on first use
        state = super().__getstate__()
        return {**state, "_cache_key": None, "_center_features": None, "_search_space": None}

    def invalidate_index(self) -> None:
        """Force the neighbour index and cached center features to be rebuilt on next use."""
        self._cache_key = None
        self._center_features = None
        self._search_space = None

    def center_features(self) -> torch.Tensor:
        """Features ``S(z_i)`` of all centers ``[n, p]`` (detached; cached until they change)."""
        self._refresh()
        assert self._center_features is not None
        return self._center_features

    def neighbors(self, x: torch.Tensor) -> torch.Tensor:
        """Indices ``[B, k]`` of the centers each query uses, nearest first in the kernel's
        metric (ties by the lowest index)."""
        x = self._check_queries(x)
        with torch.no_grad():
            fx = self._apply_features(x, "queries")
        self._refresh()
        return self._search_neighbors(fx)

    def predict_variance(self, x: torch.Tensor) -> torch.Tensor:
        """The local GP posterior variance ``[B]`` of each query's prediction:
        ``k(x, x) - k_x^T (K + reg I)^{-1} k_x`` with ``k_x = K(Z_k, S(x))`` and ``K`` the
        local Gram of its ``k`` neighbours, from the Cholesky factor the forward computes.

        This is the variance of the latent function under a GP prior with covariance ``k``
        and noise variance ``reg`` (add ``reg`` for a noisy observation), conditioned on the
        query's neighbours; with ``k = n`` it is the dense GP posterior variance. It does not
        depend on the targets, nor scale with them. Differentiable like the forward.
        """
        return self(x, return_variance=True)[1]

    @torch.compiler.disable
    def forward(
        self, x: torch.Tensor, return_variance: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predictions for queries ``x [B, d]`` (``[B, *input_shape]`` with ``features``).

        ``torch.compile`` does not trace into this method (the neighbour search, input checks
        and Cholesky jitter are data-dependent and would break the graph into many pieces,
        which made a compiled layer slower than eager); a compiled model containing the layer
        compiles everything around it and calls the layer eagerly.

        Args:
            x: the queries; an empty batch (``B = 0``) gives an empty result, as
                ``nn.Linear`` does.
            return_variance: also return :meth:`predict_variance`'s ``[B]``.

        Returns:
            ``[B, c]`` (``[B]`` when the targets were 1-D); with ``return_variance`` the
            pair ``(prediction, variance [B])``.
        """
        x = self._check_queries(x)
        fx = self._apply_features(x, "queries")
        all_features = None
        if self._features_need_grad() and x.shape[0] * self.k >= self.n_centers:
            # most centers will be neighbours of some query: one differentiable pass over all
            # of them serves both the index and the gather
            all_features = self._features_of(self.centers)
            self._refresh(all_features.detach())
        else:
            self._refresh()
        kernel = self.kernel
        B, p = fx.shape
        c = self.targets.shape[1]
        per_query = element_size(fx.dtype) * self.k * (_GRAM_TEMPORARIES * self.k + 4 * p + 2 * c)
        rows = tile_size(B, per_query, self.memory_budget)
        means, variances = [], []
        for r0 in range(0, max(B, 1), rows):  # an empty batch: one empty tile
            f = fx[r0 : r0 + rows]
            idx = self._search_neighbors(f)
            neighbours = (
                self._neighbour_features(idx) if all_features is None else all_features[idx]
            )
            mean, var = local_kernel_regression(
                kernel, f, neighbours, self.targets[idx], self.reg, return_variance=True
            )
            means.append(mean)
            variances.append(var)
        out = torch.cat(means)
        out = out[:, 0] if self._vector_targets else out
        return (out, torch.cat(variances)) if return_variance else out

    def extra_repr(self) -> str:
        learned = [
            name
            for name, flag in (
                ("centers", self.learn_centers),
                ("targets", self.learn_targets),
                ("bandwidth", self.learn_bandwidth),
            )
            if flag
        ]
        bw = "" if self.bandwidth is None else f", bandwidth={float(self.bandwidth.detach()):.4g}"
        return (
            f"n={self.n_centers}, k={self.k}, kernel={self._kernel_template.name!r}{bw}, "
            f"reg={self.reg:g}, index={self.index.name!r}, "
            f"learned={learned or 'nothing'}"
        )

    # -- internals ---------------------------------------------------------------------------
    def _check_queries(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = as_tensor(x, "x", dtype=self.centers.dtype)
        x = as_tensor(x, "x", allow_empty=True)
        want = tuple(self.centers.shape[1:])
        if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
            where = "features" if len(want) == 1 else "input shape"
            raise ValueError(
                f"x has shape {tuple(x.shape)} but the centers are {tuple(self.centers.shape)}: "
                f"queries must be [B, {', '.join(map(str, want))}] (same {where} as the centers)."
            )
        check_same_device_dtype({"centers": self.centers, "x": x})
        return x

    def _apply_features(self, x: torch.Tensor, what: str) -> torch.Tensor:
        if self.features is None:
            return x
        f = self.features(x)
        if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.shape[0] != x.shape[0]:
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(
                f"features must map [B, ...] to [B, p] but returned {shape} for {what} of shape "
                f"{tuple(x.shape)}; end the module with torch.nn.Flatten()."
            )
        return f

    def _state_key(self) -> tuple[Any, ...]:
        tensors = [self.centers]
        M = getattr(self._kernel_template, "M", None)
        if isinstance(M, torch.Tensor):  # the search metric follows a changed M
            tensors.append(M)
        training: bool | None = None
        if self.features is not None:
            tensors += [*self.features.parameters(), *self.features.buffers()]
            training = self.features.training
        return (training, *((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors))

    def _features_of(self, Z: torch.Tensor) -> torch.Tensor:
        """``S(Z)`` in chunks of ``feature_batch`` rows ``[len(Z), p]`` (Z itself without S)."""
        if self.features is None:
            return Z
        chunks = [
            self._apply_features(Z[i : i + self.feature_batch], "centers")
            for i in range(0, max(Z.shape[0], 1), self.feature_batch)  # [0, p] for no rows
        ]
        return torch.cat(chunks)

    def _features_need_grad(self) -> bool:
        """Whether the neighbours' features must carry autograd through ``features``."""
        return (
            self.features is not None
            and torch.is_grad_enabled()
            and (
                self.centers.requires_grad
                or any(p.requires_grad for p in self.features.parameters())
            )
        )

    def _refresh(self, features: torch.Tensor | None = None) -> None:
        """Rebuild the cached center features and the index if their inputs changed;
        ``features`` are the current (detached) ``S(centers)`` when the caller has them."""
        key = self._state_key()
        if key == self._cache_key and self._center_features is not None:
            return
        check_finite(self.centers.detach(), "centers")
        if features is None:
            with torch.no_grad():
                features = self._features_of(self.centers.detach())
        if self.features is not None:
            check_finite(features, "features(centers)")
        self._search_space = search_metric(self._kernel_template, features)
        self.index.build(self._search_space.apply(features), metric=self._search_space.metric)
        self._center_features = features
        self._cache_key = key

    def _search_neighbors(self, features: torch.Tensor) -> torch.Tensor:
        """Indices ``[b, k]`` of the neighbours of queries with ``features [b, p]``."""
        assert self._search_space is not None
        _, idx = self.index.search(self._search_space.apply(features.detach()), self.k)
        return idx

    def _neighbour_features(self, idx: torch.Tensor) -> torch.Tensor:
        """Features of the selected centers ``[b, k, p]``, with autograd where it is needed."""
        if self.features is None:
            return self.centers[idx]
        if not self._features_need_grad():
            assert self._center_features is not None
            return self._center_features[idx]
        unique, inverse = torch.unique(idx, return_inverse=True)
        return self._features_of(self.centers[unique])[inverse]


def _invalidate_after_load(module: nn.Module, incompatible_keys: object) -> None:
    """``load_state_dict`` post-hook: the loaded centers or features need a new index."""
    assert isinstance(module, SparseKernelLayer)
    module.invalidate_index()
